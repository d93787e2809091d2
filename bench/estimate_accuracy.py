"""Memory estimates against a real load, ours next to xllamacpp's, in one run.

    python bench/estimate_accuracy.py [MODEL ...]      (default: the demo model)

For each case: the bytes llama.cpp really allocates (a llamahost Server's own
breakdown after loading), our estimate() (the engine's dry run), our closed form
(metadata alone, what estimate() falls back to when the engine cannot read a model)
and xllamacpp's estimate_gpu_layers() (pip install xllamacpp==2026.10.11549), with
the error and the time each took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import llamahost
from llamahost.models.demo import demo_model_path

CASES = [(n_ctx, kv) for n_ctx in (512, 4096, 32768) for kv in ("f16", "q8_0")]


def timed(fn, repeat=3):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    args = parser.parse_args()
    try:
        from xllamacpp import estimate_gpu_layers as xl_estimate
    except ImportError:
        xl_estimate = None
        print("xllamacpp is not installed: its column stays empty (pip install xllamacpp==2026.10.11549)")
    models = args.models or [str(demo_model_path())]
    print("| model | n_ctx | KV | real MiB | dry run MiB | error | time | closed form MiB | error | time "
          "| xllamacpp MiB | error | time |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in models:
        for n_ctx, kv in CASES:
            params = dict(n_ctx=n_ctx, cache_type_k=kv, cache_type_v=kv, parallel=1,
                          flash_attn=True if kv != "f16" else "auto")
            with llamahost.Server(model, **params) as srv:
                real = sum(d.used for d in srv.memory_breakdown())
            row = f"| {model.rsplit('/', 1)[-1]} | {n_ctx} | {kv} | {real / 2**20:.1f} |"
            for method in ("dry run", "closed form"):
                ours, ours_s = timed(lambda: llamahost.estimate(model, method=method, **params).total_bytes)
                row += f" {ours / 2**20:.1f} | {100 * (ours - real) / real:+.2f}% | {ours_s * 1000:.0f} ms |"
            if xl_estimate is not None:
                cpu = [{"name": "CPU", "memory_free": 1 << 40}]
                theirs, theirs_s = timed(lambda: xl_estimate(cpu, model, [], n_ctx, 512, 1, kv).total_size, repeat=1)
                row += f" {theirs / 2**20:.1f} | {100 * (theirs - real) / real:+.2f}% | {theirs_s * 1000:.0f} ms |"
            else:
                row += " - | - | - |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
