"""Smoke test of an installed llamahost wheel: run it with the Python the wheel is installed in,
from outside the source tree (so that ``import llamahost`` is the wheel).

    python wheels/smoke.py --backend cpu      # or LLAMAHOST_WHEEL_BACKEND=cpu (cibuildwheel's test)

Checks that the wheel was built for that backend and imports; that the backend in use is that
one or, when it cannot load here (no driver, no device), the CPU with exactly one warning;
that forcing an unusable backend, or one the wheel lacks, is a clear error and forcing the CPU
is silent; and that a chat with the demo model (the ``demo`` extra) answers. Exits non-zero on
any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PROBE = "import json, llamahost; print(json.dumps(llamahost.system_info()))"


def probe(forced: str | None) -> subprocess.CompletedProcess:
    """system_info() in a fresh process, with LLAMAHOST_BACKEND set to ``forced`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "LLAMAHOST_BACKEND"}
    if forced is not None:
        env["LLAMAHOST_BACKEND"] = forced
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "llamahost:" in line]


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"smoke: FAILED: {message}")
    print(f"smoke: ok: {message}", flush=True)


def check_backends(backend: str) -> dict:
    default = probe(None)
    check(default.returncode == 0, "system_info() runs" + ("" if default.returncode == 0 else f"\n{default.stderr}"))
    info = json.loads(default.stdout)
    print(f"smoke: backend {info['backend']}, active {info['active_backend']}, CPU variant {info['cpu_variant']}, "
          f"unavailable {info['unavailable_backends']}")
    check(info["backend"] == backend, f"the wheel records its backend ({info['backend']})")
    check(info["cpu_variant"] is not None, f"a CPU variant was chosen at run time ({info['cpu_variant']})")
    warned = warnings_in(default.stderr)
    if info["active_backend"] == backend:
        check(not warned, f"the {backend} backend is in use, with no warning")
    else:
        check(info["active_backend"] == "cpu" and backend in info["unavailable_backends"],
              f"{backend} unavailable here ({info['unavailable_backends'].get(backend)}): fell back to the CPU")
        check(len(warned) == 1, f"exactly one warning: {warned}")
        forced = probe(backend)
        check(forced.returncode != 0 and f"LLAMAHOST_BACKEND={backend}" in forced.stderr,
              f"forcing {backend} is a clear error: {forced.stderr.strip().splitlines()[-1:]}")
    other = "vulkan" if backend != "vulkan" else "cuda"
    absent = probe(other)
    check(absent.returncode != 0 and f"LLAMAHOST_BACKEND={other}" in absent.stderr,
          f"forcing {other}, not in this wheel, is a clear error: {absent.stderr.strip().splitlines()[-1:]}")
    cpu = probe("cpu")
    check(cpu.returncode == 0 and json.loads(cpu.stdout)["active_backend"] == "cpu"
          and not warnings_in(cpu.stderr), "LLAMAHOST_BACKEND=cpu uses the CPU, silently")
    return info


def check_chat() -> None:
    import llamahost
    from llamahost.models.demo import demo_model_path

    with llamahost.Server(demo_model_path(), n_ctx=512) as srv:
        out = srv.chat([{"role": "user", "content": "Name three colours."}], max_tokens=24, temperature=0)
    text = out["choices"][0]["message"]["content"]
    timings = out["timings"]
    check(bool(text.strip()), f"a chat with the demo model answers: {text.strip()[:60]!r} "
                              f"({timings['predicted_per_second']:.1f} tokens/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default=os.environ.get("LLAMAHOST_WHEEL_BACKEND"),
                        help="the backend the wheel was built for (default: $LLAMAHOST_WHEEL_BACKEND)")
    args = parser.parse_args(argv)
    if not args.backend:
        parser.error("--backend or LLAMAHOST_WHEEL_BACKEND is required")
    start = time.perf_counter()
    import llamahost

    print(f"smoke: import llamahost {(time.perf_counter() - start) * 1000:.0f} ms from {llamahost.__file__}")
    check_backends(args.backend)
    check_chat()
    return 0


if __name__ == "__main__":
    sys.exit(main())
