"""What running in-process buys over a separate llama-server, measured in one run.

    python bench/inprocess_vs_llama_server.py [MODEL]     (default: the demo model)

Start-up: Server() until it answers, against spawning llama-server (built from the
same vendor tree) until /health is 200. Per-request overhead: wall time of a 1-token
completion minus the engine's own prompt and predict times (from `timings`), for a
direct Python call, and over HTTP for our server and llama-server taking turns request by
request.
"""

from __future__ import annotations

import statistics
import sys
import time

import llamahost
from llamahost.bench.peers import llama_server
from llamahost.bench.run import SHORT_REQUEST, interleaved_overheads
from llamahost.models.demo import demo_model_path

FLAGS = ["-c", "2048", "-np", "1", "-t", "2", "-lv", "1"]
TRIALS = 5
REQUESTS = 200


def overhead_ms(call) -> float:
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        out = call()
        wall = (time.perf_counter() - start) * 1000
        samples.append(wall - out["timings"]["prompt_ms"] - out["timings"]["predicted_ms"])
    return statistics.median(samples)


def main() -> int:
    model = sys.argv[1] if len(sys.argv) > 1 else str(demo_model_path())
    starts_ours, starts_theirs = [], []
    for _ in range(TRIALS):
        t = time.perf_counter()
        with llamahost.Server.from_args(["-m", model, *FLAGS, "--port", "0"]) as srv:
            srv.health()
            starts_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        with llama_server(["-m", model, *FLAGS]):
            starts_theirs.append(time.perf_counter() - t)

    with llamahost.Server.from_args(["-m", model, *FLAGS, "--port", "0"]) as srv, \
            llama_server(["-m", model, *FLAGS]) as peer:
        direct = overhead_ms(lambda: srv.request("POST", "/v1/completions", SHORT_REQUEST).json())
        http = interleaved_overheads({"ours": srv.url, "theirs": peer.url}, REQUESTS)
        ours_http, theirs_http = statistics.median(http["ours"]), statistics.median(http["theirs"])

    s_ours, s_theirs = statistics.median(starts_ours), statistics.median(starts_theirs)
    print(f"model: {model}")
    print("| measure | llamahost | llama-server | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| start-up to ready (median of {TRIALS}) | {s_ours * 1000:.0f} ms | {s_theirs * 1000:.0f} ms "
          f"| {s_ours / s_theirs:.2f}x |")
    print(f"| non-engine time per request, direct Python call (median of {REQUESTS}) | {direct:.2f} ms | - "
          f"| {direct / theirs_http:.2f}x |")
    print(f"| non-engine time per request, HTTP (median of {REQUESTS}) | {ours_http:.2f} ms | {theirs_http:.2f} ms "
          f"| {ours_http / theirs_http:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
