"""The portable CPU wheel against the GGML_NATIVE dev build and xllamacpp's CPU wheel, in one run:
import time and generation speed on the demo model, each engine in a fresh process of its own
Python, rounds interleaved.

    build/wheel-venv-cpu/bin/pip install httpx     # once: the benchmark's adapters use it
    python bench/wheel_vs_native.py --wheel-python build/wheel-venv-cpu/bin/python [--rounds 3]

Generation runs on one thread and is counted per CPU-second of the engine's process (128 tokens
after a five-token prompt): the speed of the code itself, which other work on a shared machine
leaves alone, where wall-clock tokens/s there varies tenfold. Wall-clock tokens/s (the best trial)
is printed beside it. The engines run through llamahost.bench.run's adapters; xllamacpp's comes from
bench/.venv (bash bench/setup_peers.sh).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 6
NATIVE = "llamahost, GGML_NATIVE dev build"

# Runs in the engine's Python; prints one JSON line. The import is timed before anything else.
WORKER = """
import json, resource, sys, time
start = time.perf_counter()
import {module}
import_ms = (time.perf_counter() - start) * 1000
import llamahost.bench.run as bench
from llamahost.models.demo import demo_model_path
bench.THREADS = 1
out = {{"import_ms": import_ms, "cpu_tps": [], "wall_tps": []}}
if "{module}" == "llamahost":
    import llamahost
    start = time.perf_counter()
    llamahost.devices()  # the first call loads the backends
    out["backends_ms"] = (time.perf_counter() - start) * 1000
    out["cpu_variant"] = llamahost.system_info()["cpu_variant"]
engine = bench.ADAPTERS["{adapter}"]()
engine.start(str(demo_model_path()))
engine.complete("Hi", 4)
for i in range({trials}):
    before = resource.getrusage(resource.RUSAGE_SELF)
    n, timings = engine.complete(f"Trial {{i}}. Once upon a time", bench.N_GEN)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    out["cpu_tps"].append(n / cpu_s)
    out["wall_tps"].append(timings["predicted_per_second"])
engine.stop()
print(json.dumps(out))
"""


def run_engine(python: str, module: str, adapter: str) -> dict:
    code = WORKER.format(module=module, adapter=adapter, trials=TRIALS)
    python = str(Path(python).absolute())  # it runs from / (so that the import is the installed package)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/", timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel-python", required=True, help="the Python of a venv with the CPU wheel installed")
    parser.add_argument("--native-python", default=sys.executable, help="the Python of the dev build (default: this)")
    parser.add_argument("--xllamacpp-python", default=str(ROOT / "bench" / ".venv" / "bin" / "python"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    engines = {  # label: (python, module whose import is timed, llamahost.bench.run adapter)
        NATIVE: (args.native_python, "llamahost", "llamahost (Python)"),
        "llamahost, portable CPU wheel": (args.wheel_python, "llamahost", "llamahost (Python)"),
        "xllamacpp CPU wheel": (args.xllamacpp_python, "xllamacpp", "xllamacpp (Python)"),
    }
    results: dict[str, list[dict]] = {label: [] for label in engines}
    for round_no in range(args.rounds):
        for label, engine in engines.items():
            results[label].append(run_engine(*engine))
            print(f"round {round_no + 1}: {label}: {results[label][-1]}", file=sys.stderr, flush=True)

    def pooled(label: str, metric: str) -> list[float]:
        return [t for r in results[label] for t in r[metric]]

    native_cpu = statistics.median(pooled(NATIVE, "cpu_tps"))
    print("| engine | import (ms) | backends loaded (ms) | CPU variant | tokens per CPU-second, 1 thread "
          "(median) | vs native | wall-clock tokens/s, 1 thread (best) |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for label, runs in results.items():
        imp = statistics.median(r["import_ms"] for r in runs)
        backends = f"{statistics.median(r['backends_ms'] for r in runs):.0f}" if "backends_ms" in runs[0] else "-"
        variant = runs[0].get("cpu_variant") or "-"
        cpu = statistics.median(pooled(label, "cpu_tps"))
        print(f"| {label} | {imp:.0f} | {backends} | {variant} | {cpu:.1f} | {cpu / native_cpu:.3f}x "
              f"| {max(pooled(label, 'wall_tps')):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
