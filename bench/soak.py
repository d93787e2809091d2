"""Soak and leak checks: concurrent HTTP clients against one Server for minutes, and Servers
created and closed in a loop. Loopback only; every loop ends by itself.

    python bench/soak.py --minutes 10 --clients 8 --create-close 50 --out bench/results/soak.json

The soak reports requests, errors and the process's RSS over time; its drift is the RSS at
the end against the RSS once the warm-up minute is over (caches, arenas and slots filled).
The create/close check reports RSS growth and threads left over N servers after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

import llamahost
from llamahost.bench.leaks import create_close
from llamahost.bench.procfs import rss_bytes
from llamahost.models.demo import demo_model_path

PROMPTS = ["Write a sentence about the sea.", "List three colours.", "Count to five.", "Name a city."]


def client(url: str, index: int, deadline: float, counts: Counter, errors: list, lock: threading.Lock) -> None:
    n = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        while time.monotonic() < deadline:
            prompt = PROMPTS[(index + n) % len(PROMPTS)]
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "stream": n % 2 == 1}
            try:
                try:
                    r = http.post("/v1/chat/completions", json=body)
                except httpx.RemoteProtocolError:
                    # llama-server closes some kept-alive connections after a streamed answer without
                    # saying so; the request met a closed connection and was never read: send it again,
                    # as HTTP clients do (and count it)
                    with lock:
                        counts["sent again on a new connection"] += 1
                    r = http.post("/v1/chat/completions", json=body)
                ok = r.status_code == 200 and (b"[DONE]" in r.content if body["stream"] else bool(r.json()["choices"]))
                outcome = "ok" if ok else f"HTTP {r.status_code}"
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                outcome = type(exc).__name__
                with lock:
                    errors.append(f"{outcome}: {exc}")
            with lock:
                counts[outcome] += 1
            n += 1


def soak(model: Path, minutes: float, clients: int, warmup: float, cache_ram: int) -> dict:
    with llamahost.Server(model, n_ctx=512 * clients, parallel=clients, cache_ram=cache_ram) as srv:
        counts: Counter = Counter()
        errors: list[str] = []
        lock = threading.Lock()
        started = time.monotonic()
        deadline = started + minutes * 60
        threads = [threading.Thread(target=client, args=(srv.url, i, deadline, counts, errors, lock))
                   for i in range(clients)]
        for t in threads:
            t.start()
        samples = []
        while any(t.is_alive() for t in threads):
            samples.append((round(time.monotonic() - started, 1), rss_bytes(), sum(counts.values())))
            time.sleep(5)
        for t in threads:
            t.join()
        after_warmup = next(r for t, r, _ in samples if t >= warmup)
        final = samples[-1][1]
        resent = counts.pop("sent again on a new connection", 0)
        return {"model": str(model), "minutes": minutes, "clients": clients, "cache_ram_mib": cache_ram,
                "requests": sum(counts.values()), "sent_again": resent,
                "outcomes": dict(counts), "errors": errors[:20], "rss_after_warmup": after_warmup, "rss_end": final,
                "rss_drift_percent": round(100 * (final - after_warmup) / after_warmup, 2),
                "rss_max": max(r for _, r, _ in samples), "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: the demo model)")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the RSS the drift is measured from")
    parser.add_argument("--cache-ram", type=int, default=0, metavar="MIB",
                        help="the server's prompt cache (llama-server's --cache-ram; default here 0: a cache of "
                             "every prompt grows by design up to its limit, 8 GiB by default)")
    parser.add_argument("--create-close", type=int, default=50, metavar="N")
    parser.add_argument("--create-close-model", type=Path, default=None, help="GGUF for that loop (default: --model)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    model = args.model or demo_model_path()
    results = {"create_close": create_close(args.create_close_model or model, args.create_close),
               "soak": soak(model, args.minutes, args.clients, args.warmup, args.cache_ram)}
    cc, s = results["create_close"], results["soak"]
    print(f"create/close: {cc['servers']} servers in {cc['seconds']} s, RSS {cc['rss_growth_mib']:+.2f} MiB, "
          f"threads {cc['os_threads_before']} -> {cc['os_threads_after']} (Python threads left: "
          f"{', '.join(cc['python_threads_left']) or 'none'})")
    print(f"soak: {s['clients']} clients, {s['minutes']} min, {s['requests']} requests, outcomes {s['outcomes']} "
          f"({s['sent_again']} sent again on a new connection), prompt cache {s['cache_ram_mib']} MiB, "
          f"RSS {s['rss_after_warmup'] / 2**20:.1f} -> {s['rss_end'] / 2**20:.1f} MiB ({s['rss_drift_percent']:+.2f} %), "
          f"max {s['rss_max'] / 2**20:.1f} MiB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    failed = s["outcomes"].keys() - {"ok"} or abs(s["rss_drift_percent"]) >= 2 or cc["rss_growth_mib"] >= 10 \
        or cc["os_threads_after"] != cc["os_threads_before"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
