"""The same engine run five ways, all up at once, taking turns request by request so that a
shared machine's slow spells fall on all of them alike: llama-server (built from our vendor tree)
with `-lv 1` and with its default logging, `llamahost serve` with its default logging (llama-
server's) and with `-lv 1`, and an in-process `Server` reached over HTTP from this process. Prints,
per way, the median non-engine time of a short request (wall time minus the engine's prompt and
predict times; 10th and 90th percentiles; difference to llama-server -lv 1) and the median
generation tokens/s on the benchmark's prompt. The check behind docs/BENCHMARKS.md's notes.

    python bench/paired.py [--requests 500] [--generations 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from contextlib import ExitStack


import llamahost
from llamahost.bench.peers import llama_server, llamahost_serve
from llamahost.bench.run import N_CTX, N_GEN, PARALLEL, PROMPT, THREADS, HTTPEngine, interleaved_overheads
from llamahost.models.demo import demo_model_path


def generation_tps(urls: dict[str, str], trials: int) -> dict[str, list[float]]:
    """Generation tok/s of each way, taking turns in a new order each trial (the benchmark's adapter)."""
    tps: dict[str, list[float]] = {name: [] for name in urls}
    engines = {name: HTTPEngine() for name in urls}
    for name, engine in engines.items():
        engine.url = urls[name]
    try:
        for trial in range(trials):
            order = list(urls)
            random.shuffle(order)
            for name in order:
                _, timings = engines[name].complete(f"Trial {trial}. {PROMPT}", N_GEN)
                tps[name].append(timings["predicted_per_second"])
    finally:
        for engine in engines.values():
            engine.close_client()
    return tps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="short requests per way")
    parser.add_argument("--generations", type=int, default=5, help=f"{N_GEN}-token generations per way")
    args = parser.parse_args(argv)
    model = str(demo_model_path())
    flags = ["-m", model, "-c", str(N_CTX), "-np", str(PARALLEL), "-t", str(THREADS), "-tb", str(THREADS)]
    with ExitStack() as stack:
        urls = {
            "llama-server -lv 1": stack.enter_context(llama_server(flags + ["-lv", "1"])).url,
            "llama-server (its default logging)": stack.enter_context(llama_server(flags)).url,
            "llamahost serve (llama-server's logging)": stack.enter_context(llamahost_serve(flags)).url,
            "llamahost serve -lv 1": stack.enter_context(llamahost_serve(flags + ["-lv", "1"])).url,
            "in-process Server, HTTP": stack.enter_context(llamahost.Server(
                model, n_ctx=N_CTX, parallel=PARALLEL, threads=THREADS, threads_batch=THREADS)).url,
        }
        overheads = interleaved_overheads(urls, args.requests)
        tps = generation_tps(urls, args.generations)
    reference = statistics.median(overheads["llama-server -lv 1"])
    print(f"| way | non-engine ms (median of {args.requests}) | p10 | p90 | difference | "
          f"generation tok/s (median of {args.generations}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in urls:
        samples = sorted(overheads[name])
        median = statistics.median(samples)
        print(f"| {name} | {median:.3f} | {samples[len(samples) // 10]:.3f} | {samples[-len(samples) // 10]:.3f} "
              f"| {median - reference:+.3f} | {statistics.median(tps[name]):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
