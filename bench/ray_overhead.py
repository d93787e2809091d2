"""What serving a model beyond one process costs against loading it locally, measured in one run.

    python bench/ray_overhead.py [--model M] [--requests 200] [--rounds 5]

Three paths are up at once on this machine, with the same model and parameters: a local load (a
``Server`` in this process, asked on its own HTTP port), the model on Ray Serve
(``llamahost.serving.ray_serve.build``: one replica on a one-node Ray started here; a request goes
through Ray's HTTP proxy, the Endpoint replica and the Models replica's pool), and the model's
layers all on two RPC workers on loopback (``llamahost.RPCWorker``, as many threads each as the
local load has, working one after the other; the model
served by a pool's worker process, asked on its port): every token's graph crosses the RPC
protocol, over loopback, the lower bound of a network's cost. The same client, llamahost's
HTTPClient over kept-alive connections, asks them all, taking turns:
- non-engine time per short request (a 1-token completion: wall time minus the engine's own
  prompt and predict times); the median of the paired differences is the Ray hop, split by
  GET /health (which the Endpoint answers) into Ray's proxy and the Endpoint's call to a replica;
- time to first token and generation tokens/s of one streamed completion (the benchmark's prompt
  and length, ``llamahost.bench.run``);
- aggregate generation tokens/s of concurrent streamed completions.
Speeds are medians over rounds, a ratio (path / local) the median of the rounds' ratios, so that
a busy machine's drift hits both sides of each ratio alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from ray import serve

import llamahost
from llamahost.bench.run import N_GEN, PROMPT, SHORT_REQUEST, THREADS
from llamahost.core.transport import free_port
from llamahost.engine.client import HTTPClient
from llamahost.serving.ray_serve import build

PARAMS = {"n_ctx": 4096, "parallel": 4, "threads": THREADS, "seed": 42}
RPC_SPLIT = {"n_gpu_layers": "all", "tensor_split": [1, 1]}  # every layer on the workers
LABELS = {"local": "local load (Server, HTTP)", "ray": "Ray Serve", "rpc": "RPC workers, loopback"}


def non_engine_ms(clients: dict[str, HTTPClient], n: int) -> dict[str, list[float]]:
    """Short completions taking turns in a new random order each time."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(n):
        order = list(clients)
        random.shuffle(order)
        for name in order:
            started = time.perf_counter()
            out = clients[name].complete(**dict(SHORT_REQUEST, model="m"))
            wall_ms = (time.perf_counter() - started) * 1e3
            samples[name].append(wall_ms - out["timings"]["prompt_ms"] - out["timings"]["predicted_ms"])
    return samples


def health_ms(clients: dict[str, HTTPClient], n: int) -> dict[str, list[float]]:
    """GET /health taking turns: on the Ray path the Endpoint answers it, so this is the proxy's
    hop alone, without the one to the Models replica."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(n):
        for name, client in clients.items():
            started = time.perf_counter()
            client.request("GET", "/health")
            samples[name].append((time.perf_counter() - started) * 1e3)
    return samples


def streamed(client: HTTPClient, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """Seconds to the first token, seconds to the last, tokens generated."""
    started = time.perf_counter()
    first = None
    tokens = 0
    for event in client.complete(prompt, model="m", max_tokens=max_tokens, ignore_eos=True, temperature=0,
                                 stream=True):
        if first is None and event["choices"] and event["choices"][0]["text"]:
            first = time.perf_counter() - started
        tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
    return first, time.perf_counter() - started, tokens


def concurrent_tps(client: HTTPClient, clients: int, max_tokens: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(t for _, _, t in pool.map(lambda i: streamed(client, f"({i}) {PROMPT[:200]}", max_tokens),
                                               range(clients)))
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GGUF (default: the demo model)")
    parser.add_argument("--requests", type=int, default=200, help="short requests per path")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    if args.model is None:
        from llamahost.models.demo import demo_model_path

        args.model = str(demo_model_path())
    print(f"model {args.model}; {PARAMS}; {args.requests} short requests per path, {args.rounds} rounds of one "
          f"stream of {N_GEN} tokens and {args.clients} concurrent streams of {N_GEN} tokens per path")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build({"m": args.model}, params=PARAMS), name="bench", route_prefix="/")
        with llamahost.Server(args.model, **PARAMS) as local, llamahost.RPCWorker(threads=THREADS) as first, \
                llamahost.RPCWorker(threads=THREADS) as second, llamahost.Pool(idle_ttl=None) as pool:
            split = pool.get(args.model, rpc=[first.endpoint, second.endpoint], **PARAMS, **RPC_SPLIT)
            clients = {"local": HTTPClient(local.url), "ray": HTTPClient(f"http://127.0.0.1:{port}"),
                       "rpc": HTTPClient(split.url)}
            non_engine_ms(clients, 10)  # warm-up: the model loads on the replica
            short = non_engine_ms(clients, args.requests)
            hops = {name: statistics.median(r - loc for r, loc in zip(short[name], short["local"]))
                    for name in ("ray", "rpc")}
            health = health_ms({name: clients[name] for name in ("local", "ray")}, args.requests)
            proxy_hop = statistics.median(r - loc for r, loc in zip(health["ray"], health["local"]))
            figures: dict[str, dict[str, list[float]]] = {name: {"ttft": [], "tps": [], "conc": []} for name in clients}
            for round_ in range(args.rounds):
                order = list(clients)[round_ % 3:] + list(clients)[:round_ % 3]  # each path first in turn
                for name in order:
                    first, last, tokens = streamed(clients[name], f"Round {round_}. {PROMPT}", N_GEN)
                    figures[name]["ttft"].append(first * 1e3)
                    figures[name]["tps"].append((tokens - 1) / (last - first))
                    figures[name]["conc"].append(concurrent_tps(clients[name], args.clients, N_GEN))
                    f = figures[name]
                    print(f"round {round_} {name:<6} first token {f['ttft'][-1]:7.1f} ms, "
                          f"{f['tps'][-1]:6.2f} tokens/s, {args.clients} clients {f['conc'][-1]:6.2f} tokens/s",
                          flush=True)
            for client in clients.values():
                client.close()
    finally:
        serve.shutdown()
        ray.shutdown()

    def ratio(name: str, metric: str) -> float:
        return statistics.median(r / loc for r, loc in zip(figures[name][metric], figures["local"][metric]))

    print(f"\n{'path':<28} {'non-engine ms':>14} {'first token ms':>15} {'tokens/s':>9} "
          f"{f'{args.clients} clients tok/s':>17}")
    for name, label in LABELS.items():
        f = figures[name]
        print(f"{label:<28} {statistics.median(short[name]):>14.2f} {statistics.median(f['ttft']):>15.1f} "
              f"{statistics.median(f['tps']):>9.2f} {statistics.median(f['conc']):>17.2f}")
    for name in ("ray", "rpc"):
        print(f"{'ratio ' + name + ' / local':<28} {format(hops[name], '+.2f') + ' ms':>14} {ratio(name, 'ttft'):>15.3f} "
              f"{ratio(name, 'tps'):>9.3f} {ratio(name, 'conc'):>17.3f}")
    per_token = 1e3 / statistics.median(figures["rpc"]["tps"]) - 1e3 / statistics.median(figures["local"]["tps"])
    print(f"RPC over loopback: {per_token:+.2f} ms a generated token against the local load")
    print(f"of Ray's +{hops['ray']:.2f} ms, Ray's HTTP proxy to the Endpoint (GET /health): +{proxy_hop:.2f} ms; the "
          f"Endpoint to the Models replica and back: +{hops['ray'] - proxy_hop:.2f} ms")


if __name__ == "__main__":
    main()
