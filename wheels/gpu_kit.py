"""Makes the kit the GPU check (wheels/gpu_check.sh) takes to a lent GPU machine, which reaches no
network: one folder, ignored by git, that the device tool's ``run`` carries (``carry=["gpu-kit"]``).

    python wheels/gpu_kit.py [--out gpu-kit] [--vulkan-wheel WHEEL]

  llama.cpp.tar.xz      vendor/llama.cpp (filled by cmake/fetch_llama_cpp.py when empty) without what
                        no build there reads: docs, tests, examples, the ggml backends not built there,
                        the UI's sources, and the models but the vocabularies and chat templates the
                        synthetic models of the tests and the check copy
  wheels/               gguf (the synthetic models), scikit-build-core and Cython (the build), for
                        CPython 3.12 on x86-64, at this environment's versions
  debs/                 Debian 12's Vulkan loader and the GL libraries NVIDIA's Vulkan driver needs
                        (the device tool's notes), patch (the build patches upstream's sources) and ccache
  libggml-vulkan.so.xz  the Vulkan module of a portable wheel built here (--vulkan-wheel; default: the
                        newest wheel under dist/wheels holding one): that machine has no glslc
  MANIFEST.json         the commit, and each file's bytes and sha256

Prints the kit's size beside the working tree's: both travel, within the tool's 64 MiB.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cmake"))
from fetch_llama_cpp import sha256_of  # noqa: E402 - the build's own file digest
VENDOR = ROOT / "vendor" / "llama.cpp"
MiB = 1 << 20

# vendor/llama.cpp: what the build reads (CMake's lists, the sources of ggml, llama, common, the
# tools and the vendored libraries), and the tokenizers of tests/synthetic.py
KEEP = ("CMakeLists.txt", "LICENSE", "cmake", "common", "ggml", "include", "licenses", "scripts", "src", "tools",
        "vendor", "models/templates", "models/ggml-vocab-llama-spm.gguf", "models/ggml-vocab-qwen2.gguf",
        "models/ggml-vocab-bert-bge.gguf")
DROP = tuple(f"ggml/src/ggml-{name}" for name in (
    "cann", "et", "hexagon", "metal", "opencl", "openvino", "sycl", "virtgpu", "vulkan", "webgpu", "zdnn")) + (
    "tools/ui/src", "tools/ui/tests", "tools/server/tests")
# Debian 12's packages: the Vulkan loader and GL libraries (/work/.library/device/README.md), patch, ccache
DEBS = ("libvulkan1", "libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2",
        "patch", "ccache", "libhiredis0.14")
WHEELS = ("gguf", "scikit-build-core", "cython")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def log(message: str) -> None:
    print(f"[gpu-kit] {message}", flush=True)


def under(name: str, paths: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + "/") for p in paths)


def kept(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = member.name.partition("/")[2]  # the path inside llama.cpp/
    if under(name, DROP):
        return None
    on_the_way = member.isdir() and any(p.startswith(name + "/") for p in KEEP)  # a folder holding a kept path
    return member if not name or under(name, KEEP) or on_the_way else None


def source_archive(out: Path) -> None:
    if subprocess.run([sys.executable, str(ROOT / "cmake" / "fetch_llama_cpp.py")]).returncode != 0:
        raise SystemExit("vendor/llama.cpp could not be filled")
    with tarfile.open(out / "llama.cpp.tar.xz", "w:xz", preset=9) as tar:
        tar.add(VENDOR, arcname="llama.cpp", filter=kept)


def python_wheels(out: Path) -> None:
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out / "wheels"), *pins],
                   check=True)


def debian_packages(out: Path) -> None:
    (out / "debs").mkdir()
    subprocess.run(["apt-get", "download", *DEBS], cwd=out / "debs", check=True)


def vulkan_module(out: Path, wheel: Path | None) -> str:
    if wheel is None:
        def holds(path: Path) -> bool:
            return any(n.endswith("/libggml-vulkan.so") for n in zipfile.ZipFile(path).namelist())

        candidates = sorted((w for w in ROOT.glob("dist/wheels/*/repaired/*.whl") if holds(w)),
                            key=lambda w: w.stat().st_mtime)
        if not candidates:
            raise SystemExit("no wheel under dist/wheels holds libggml-vulkan.so: build one (docs/WHEELS.md), "
                             "or name it with --vulkan-wheel")
        wheel = candidates[-1]
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("/libggml-vulkan.so"))
        with z.open(name) as src, lzma.open(out / "libggml-vulkan.so.xz", "wb", preset=9) as dst:
            shutil.copyfileobj(src, dst)
    return wheel.name


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def working_tree_bytes() -> int:
    """What the device tool sends besides the kit: tracked files, and untracked ones git does not ignore."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sum((ROOT / n).stat().st_size for n in names if n and (ROOT / n).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-kit", help="default: gpu-kit (in .gitignore)")
    parser.add_argument("--vulkan-wheel", type=Path, help="a wheel holding llamahost/core/libggml-vulkan.so")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if not out.is_relative_to(ROOT) or subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=ROOT).returncode:
        raise SystemExit(f"{out}: the kit goes in a folder of this checkout that git ignores (carry names it there; "
                         "not ignored, it would travel twice)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for what, make in (("the trimmed llama.cpp sources", lambda: source_archive(out)),
                       ("the Python wheels", lambda: python_wheels(out)),
                       ("Debian's packages", lambda: debian_packages(out))):
        start = time.monotonic()
        make()
        log(f"{what}: {time.monotonic() - start:.0f} s")
    vulkan_from = vulkan_module(out, args.vulkan_wheel)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest = {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
                "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "vulkan_module_from": vulkan_from,
                "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    for name, entry in manifest["files"].items():
        log(f"{entry['bytes'] / MiB:7.2f} MiB  {name}")
    kit, tree = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()), working_tree_bytes()
    log(f"kit {kit / MiB:.1f} MiB + working tree {tree / MiB:.1f} MiB = {(kit + tree) / MiB:.1f} MiB of the "
        f"device tool's 64 MiB; commit {manifest['commit'][:9]}{' (with uncommitted changes)' if manifest['dirty'] else ''}")
    return 0 if kit + tree < 60 * MiB else 1


if __name__ == "__main__":
    sys.exit(main())
