"""What the one-endpoint router costs against calling the model's server directly.

For each isolation (thread: the router calls the in-process route handlers; process:
it forwards over loopback HTTP to the worker), over kept-alive HTTP connections (the same
client, llamahost's HTTPClient, on both paths):
- overhead per request: the median of (latency through the router - latency straight to
  the model's own server) over requests sent alternately to the two, for a cheap route
  (/tokenize) and a one-token completion;
- throughput: tokens/s of concurrent streamed completions through the router, divided by
  the same straight to the model's server just before or after (the two in turn, in
  alternating order): the median of the rounds' ratios, so that a busy machine's drift
  hits both sides of each ratio alike. The clients run in processes of their own, so that
  their Python does not share the router's interpreter lock.

    python bench/router_overhead.py [--model M] [--requests 300] [--clients 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import Executor, ProcessPoolExecutor

from llamahost import Pool
from llamahost.engine.client import HTTPClient
from llamahost import Router


def latencies(clients: dict[str, HTTPClient], body: dict, path: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(n):
        for name, client in clients.items():  # alternately, so that drift hits both alike
            started = time.perf_counter()
            response = client.request("POST", path, body)
            out[name].append(time.perf_counter() - started)
            assert response.status == 200, response.body
    return out


def one_client(url: str, i: int, completions: int, max_tokens: int) -> int:
    tokens = 0
    with HTTPClient(url) as client:
        for j in range(completions):
            events = list(client.complete(f"Story {i}.{j}:", model="m", max_tokens=max_tokens, ignore_eos=True,
                                          temperature=0, stream=True))
            tokens += events[-1]["usage"]["completion_tokens"]
    return tokens


def throughput(processes: Executor, url: str, clients: int, per_client: int, max_tokens: int) -> float:
    started = time.perf_counter()
    tokens = sum(processes.map(one_client, [url] * clients, range(clients), [per_client] * clients,
                               [max_tokens] * clients))
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GGUF (default: the demo model)")
    parser.add_argument("--requests", type=int, default=500, help="requests per route and path for the latency")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=2, help="completions per client per round")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--isolation", nargs="+", default=["thread", "process"])
    args = parser.parse_args()
    if args.model is None:
        from llamahost.models.demo import demo_model_path

        args.model = str(demo_model_path())
    print(f"model {args.model}; {args.requests} requests per route and path, {args.clients} clients x "
          f"{args.per_client} completions of {args.max_tokens} tokens, {args.rounds} rounds")
    print(f"{'isolation':<10} {'route':<24} {'direct ms':>10} {'router ms':>10} {'overhead ms':>12}")
    processes = ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
    for isolation in args.isolation:
        with Pool(isolation=isolation) as pool:
            handle = pool.get(args.model, n_ctx=2048, parallel=args.clients, threads=2)
            with Router(pool, {"m": handle}, port=0) as router:
                urls = {"direct": handle.url, "router": router.url}
                clients = {name: HTTPClient(url) for name, url in urls.items()}
                cases = [("/tokenize", {"model": "m", "content": "Hello world, how are you?"}),
                         ("/v1/completions", {"model": "m", "prompt": "Hi", "max_tokens": 1, "temperature": 0})]
                for path, body in cases:
                    latencies(clients, body, path, 20)  # warm-up
                    got = latencies(clients, body, path, args.requests)
                    direct, routed = (statistics.median(got[k]) * 1e3 for k in ("direct", "router"))
                    overhead = statistics.median(r - d for r, d in zip(got["router"], got["direct"])) * 1e3
                    label = path + (" (1 token)" if "completions" in path else "")
                    print(f"{isolation:<10} {label:<24} {direct:>10.3f} {routed:>10.3f} {overhead:>12.3f}",
                          flush=True)
                rates: dict[str, list[float]] = {"direct": [], "router": []}
                throughput(processes, urls["direct"], args.clients, 1, args.max_tokens)  # warm-up
                for round_ in range(args.rounds):
                    for name in ("direct", "router") if round_ % 2 == 0 else ("router", "direct"):
                        rates[name].append(throughput(processes, urls[name], args.clients, args.per_client,
                                                      args.max_tokens))
                ratio = statistics.median(r / d for r, d in zip(rates["router"], rates["direct"]))
                direct, routed = (statistics.median(rates[k]) for k in ("direct", "router"))
                print(f"{isolation:<10} {'throughput tokens/s':<24} {direct:>10.1f} {routed:>10.1f} "
                      f"{'ratio ' + format(ratio, '.3f'):>12}", flush=True)
                for client in clients.values():
                    client.close()
    processes.shutdown()


if __name__ == "__main__":
    main()
