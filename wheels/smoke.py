"""Smoke test of an installed llamahost wheel: run it with the Python the wheel is installed in,
from outside the source tree (so that ``import llamahost`` is the wheel).

    python wheels/smoke.py --backend cpu      # or LLAMAHOST_WHEEL_BACKEND=cpu (cibuildwheel's test)

Checks that the wheel was built for that backend (or backends: ``--backend cuda,vulkan``) and
imports; that the backend in use is the first of its GPU backends that loads here, or the CPU,
with exactly one warning naming each one skipped and why (no driver, no device); that forcing a
skipped backend, or one the wheel lacks, is a clear error and forcing the CPU is silent; that
a chat with the demo model (the ``demo`` extra) answers; and that its RPC module serves and
uses a worker. Exits non-zero on any failure.
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
    """``backend``: what the wheel was built for, one name or its GPU backends ("cuda,vulkan")."""
    default = probe(None)
    check(default.returncode == 0, "system_info() runs" + ("" if default.returncode == 0 else f"\n{default.stderr}"))
    info = json.loads(default.stdout)
    active, unavailable = info["active_backend"], info["unavailable_backends"]
    print(f"smoke: backend {info['backend']}, active {active}, CPU variant {info['cpu_variant']}, "
          f"unavailable {unavailable}")
    check(info["backend"] == backend, f"the wheel records its backend ({info['backend']})")
    check(info["cpu_variant"] is not None, f"a CPU variant was chosen at run time ({info['cpu_variant']})")
    gpus = [name for name in backend.split(",") if name != "cpu"]
    # the chain stops at the first GPU backend that works: every one before it was tried and skipped
    tried = gpus[:gpus.index(active)] if active in gpus else gpus
    check(active in gpus or active == "cpu", f"the backend in use is one of the wheel's, or the CPU ({active})")
    check(sorted(unavailable) == sorted(tried),
          f"the GPU backends tried before {active}, skipped, each with its reason: {unavailable or 'none'}")
    warned = warnings_in(default.stderr)
    if tried:
        check(len(warned) == 1 and all(f"{name}: {unavailable[name]}" in warned[0] for name in tried),
              f"exactly one warning, giving each reason: {warned}")
    else:
        check(not warned, f"no warning: {warned}")
    for name in tried:
        forced = probe(name)
        check(forced.returncode != 0 and f"LLAMAHOST_BACKEND={name}" in forced.stderr,
              f"forcing {name} is a clear error: {forced.stderr.strip().splitlines()[-1:]}")
    other = next(name for name in ("vulkan", "cuda", "hip") if name not in gpus)
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


def check_rpc() -> None:
    """The wheel's RPC module: a worker process offers its devices, and the demo model split over
    it answers (served from a worker process of the pool, as a model using RPC workers is)."""
    import llamahost
    from llamahost.models.demo import demo_model_path

    with llamahost.RPCWorker(threads=1) as worker, llamahost.Pool(idle_ttl=None) as pool:
        check(bool(worker.devices), f"an RPC worker offers its devices: {worker.devices}")
        handle = pool.get(demo_model_path(), rpc=[worker.endpoint], n_ctx=512, n_gpu_layers=6)
        text = handle.request("POST", "/completion", {"prompt": "Hello", "n_predict": 4}).json()["content"]
    check(bool(text), f"the demo model split over it answers: {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default=os.environ.get("LLAMAHOST_WHEEL_BACKEND"),
                        help="the backend(s) the wheel was built for, as the recipe names them "
                             "(default: $LLAMAHOST_WHEEL_BACKEND)")
    args = parser.parse_args(argv)
    if not args.backend:
        parser.error("--backend or LLAMAHOST_WHEEL_BACKEND is required")
    start = time.perf_counter()
    import llamahost

    print(f"smoke: import llamahost {(time.perf_counter() - start) * 1000:.0f} ms from {llamahost.__file__}")
    check_backends(args.backend)
    check_chat()
    check_rpc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
