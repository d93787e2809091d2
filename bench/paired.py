"""The same engine three ways, alternated, so that a shared machine's slow spells hit them all:
llama-server (built from our vendor tree), `llamahost serve` (a process of its own) and an
in-process `Server` reached over HTTP. Prints, per way, the median generation tokens/s on the
benchmark's prompt and the median non-engine time of a short request (wall time minus the
engine's prompt and predict times). The check behind docs/BENCHMARKS.md's notes.

    python bench/paired.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx

import llamahost
from llamahost._peers import llama_server, llamahost_serve
from llamahost.bench import N_CTX, N_GEN, PARALLEL, PROMPT, THREADS
from llamahost.demo import demo_model_path

GEN_TRIALS = 5
SHORT_REQUESTS = 80  # the first 10 are not counted (connections, caches)


def measure(url: str) -> tuple[list[float], list[float]]:
    gen, overhead = [], []
    with httpx.Client(timeout=600) as client:
        for trial in range(GEN_TRIALS):
            body = {"prompt": f"Trial {trial}. {PROMPT}", "max_tokens": N_GEN, "temperature": 0, "ignore_eos": True,
                    "cache_prompt": False}
            gen.append(client.post(url + "/v1/completions", json=body).json()["timings"]["predicted_per_second"])
        for i in range(SHORT_REQUESTS):
            body = {"prompt": "Hi", "max_tokens": 1, "temperature": 0, "cache_prompt": False}
            start = time.perf_counter()
            timings = client.post(url + "/v1/completions", json=body).json()["timings"]
            wall_ms = (time.perf_counter() - start) * 1000
            if i >= 10:
                overhead.append(wall_ms - timings["prompt_ms"] - timings["predicted_ms"])
    return gen, overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    model = str(demo_model_path())
    flags = ["-m", model, "-c", str(N_CTX), "-np", str(PARALLEL), "-t", str(THREADS), "-tb", str(THREADS)]
    def add(name: str, url: str) -> None:
        gen, overhead = measure(url)
        results[name][0].extend(gen)
        results[name][1].extend(overhead)

    def in_process():
        return llamahost.Server(model, n_ctx=N_CTX, parallel=PARALLEL, threads=THREADS, threads_batch=THREADS)

    ways = [("llama-server -lv 1", lambda: llama_server(flags + ["-lv", "1"])),
            ("llamahost serve", lambda: llamahost_serve(flags)), ("in-process Server, HTTP", in_process)]
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in ways}
    for round_no in range(args.rounds):
        for name, start in ways[round_no % 3:] + ways[:round_no % 3]:  # each round starts with another
            with start() as running:
                add(name, running.url)
        print(f"round {round_no + 1}: generation tok/s (this round) " + ", ".join(
            f"{name} {statistics.median(gen[-GEN_TRIALS:]):.1f}" for name, (gen, _) in results.items() if gen),
            file=sys.stderr, flush=True)
    print(f"| way | generation tok/s (median of {GEN_TRIALS * args.rounds}) | non-engine ms "
          f"(median of {(SHORT_REQUESTS - 10) * args.rounds}) |")
    print("|---|---:|---:|")
    for name, (gen, overhead) in results.items():
        print(f"| {name} | {statistics.median(gen):.1f} | {statistics.median(overhead):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
