"""Cold start against its floor and the peers, measured in one run, rounds interleaved.

    python bench/cold_start.py [MODEL] [--rounds N]     (default: the demo model, 5 rounds)

Each load leaves the context size to the engine (as `llama-server -m MODEL` does) and ends when
the model is ready to serve. The model file is in the page cache for every load.

- llamahost, first load: `Server(model)` with no plan remembered: the engine runs upstream's
  fitting (a pass over the model without allocation), then loads.
- llamahost, reload: the same, the fitting's choices remembered (engine/plans.py).
- llama-server: spawn until /health answers 200 (built from the same llama.cpp tree).
- xllamacpp: `xllamacpp.Server(params)` with n_ctx 0, in an interpreter of its own (after a first load).
- llama-cpp-python: `Llama(model, n_ctx=0)` where it is installed (bench/setup_peers.sh), likewise.
- the floor: reading the file from the page cache, plus creating the model's tensors and the
  context with nothing allocated (the engine's dry run with the context given), plus a warm-up
  decode of one token (llama's own prompt time for a 1-token prompt). Repacking weights for the
  CPU is not in it: the floor is lower than the true one.

Also `import llamahost` and `import xllamacpp` (python -X importtime, fresh interpreters).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

THREADS = ["-t", "2", "-tb", "2"]


def read_time(path: str) -> float:
    buffer = bytearray(8 << 20)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return time.perf_counter() - start


def dry_run_time(path: str, n_ctx: int) -> float:
    from llamahost.core import _native

    start = time.perf_counter()
    _native.memory_estimate(["-m", path, "-c", str(n_ctx), "--fit", "off", *THREADS])
    return time.perf_counter() - start


def llamahost_load(path: str) -> tuple[float, object]:
    import llamahost

    start = time.perf_counter()
    srv = llamahost.Server.from_args(["-m", path, "-np", "1", "--port", "0", "-lv", "1", *THREADS])
    return time.perf_counter() - start, srv


def llama_server_load(path: str) -> float:
    from llamahost.bench.peers import llama_server

    start = time.perf_counter()
    with llama_server(["-m", path, "-np", "1", "-lv", "1", *THREADS]):
        return time.perf_counter() - start


def xllamacpp_load(path: str) -> float:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = path
    params.n_ctx = 0
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    start = time.perf_counter()
    srv = xlc.Server(params)
    elapsed = time.perf_counter() - start
    srv.handle_completions({"prompt": "a", "max_tokens": 1})  # its destructor hangs on a server never asked anything
    del srv
    return elapsed


def llama_cpp_python_load(path: str) -> float:
    from llama_cpp import Llama

    start = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=0, n_threads=2, n_threads_batch=2, verbose=False)
    elapsed = time.perf_counter() - start
    llm.close()
    return elapsed


def in_a_process_of_its_own(peer: str, path: str) -> float:
    """A peer's load, timed in a fresh interpreter after one load there (its one-time set-up out of
    the way): two llama.cpp builds in one process would share their global symbols."""
    out = subprocess.run([sys.executable, __file__, path, "--peer", peer], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


PEERS = {"xllamacpp": ("xllamacpp", xllamacpp_load), "llama-cpp-python": ("llama_cpp", llama_cpp_python_load)}


def import_ms(module: str) -> float:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, check=True).stderr
    line = [line for line in out.splitlines() if re.search(rf"\|\s*{re.escape(module)}$", line)][-1]
    return int(line.split("|")[1]) / 1000


def available(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        load = PEERS[args.peer][1]
        load(args.model)
        print(load(args.model))
        return 0
    os.environ["LLAMAHOST_HOME"] = tempfile.mkdtemp(prefix="llamahost-cold-start-")  # no plan remembered yet
    from llamahost.models.demo import demo_model_path

    path = args.model or str(demo_model_path())  # assembled into the fresh home once, before any timing
    peers = [name for name, (module, _) in PEERS.items() if available(module)]
    times: dict[str, list[float]] = {name: [] for name in
                                     ["llamahost first load", "llamahost reload", "llama-server", *peers, "floor"]}
    floor_parts: dict[str, list[float]] = {"read": [], "dry run": [], "warm-up": []}
    read_time(path)  # into the page cache

    first, srv = llamahost_load(path)
    assert srv.fitting == "ran", srv.fitting
    n_ctx = srv.request("GET", "/props").json()["default_generation_settings"]["n_ctx"]
    srv.close()
    times["llamahost first load"].append(first)
    for _ in range(args.rounds):
        elapsed, srv = llamahost_load(path)
        assert srv.fitting == "remembered", srv.fitting
        answer = srv.request("POST", "/completion", {"prompt": "a", "n_predict": 0, "cache_prompt": False}).json()
        srv.close()
        times["llamahost reload"].append(elapsed)
        floor_parts["warm-up"].append(answer["timings"]["prompt_ms"] / 1000)
        times["llama-server"].append(llama_server_load(path))
        for name in peers:
            times[name].append(in_a_process_of_its_own(name, path))
        floor_parts["read"].append(read_time(path))
        floor_parts["dry run"].append(dry_run_time(path, n_ctx))
        times["floor"].append(floor_parts["read"][-1] + floor_parts["dry run"][-1] + floor_parts["warm-up"][-1])

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"model: {path} ({os.path.getsize(path) / 2**20:.0f} MiB), context left to the engine ({n_ctx} tokens), "
          f"{args.rounds} rounds, medians")
    print("| load | ms | × floor | × llama-server |")
    print("|---|---:|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value * 1000:.0f} | {value / median['floor']:.2f} | {value / median['llama-server']:.2f} |")
    parts = ", ".join(f"{name} {statistics.median(values) * 1000:.0f} ms" for name, values in floor_parts.items())
    print(f"floor = {parts}")
    imports = {module: statistics.median(import_ms(module) for _ in range(5))
               for module in ["llamahost", *(["xllamacpp"] if "xllamacpp" in peers else [])]}
    print("import: " + ", ".join(f"{module} {ms:.1f} ms" for module, ms in imports.items()))
    print(json.dumps({"load_ms": {k: round(v * 1000, 1) for k, v in median.items()},
                      "import_ms": {k: round(v, 1) for k, v in imports.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
