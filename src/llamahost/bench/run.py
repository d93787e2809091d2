"""llamahost against its peers on one model, one machine, one thread count, in one run.

    bash bench/setup_peers.sh                                    # once: the peers, into bench/.venv
    bench/.venv/bin/llamahost bench [--model M] [--out docs]     # or: python bench/run.py

Each engine runs in a fresh subprocess (so peak RSS is its own): load time, time to
first token, prompt and generation tokens/s, non-engine time per short request (wall
time minus the engine's own prompt and predict times), aggregate generation tokens/s
with 1, 4 and 8 concurrent clients, peak RSS. Medians of repeated trials. The HTTP
engines' non-engine time is measured with all of them up at once, taking turns request
by request (a few tenths of a millisecond are the question, and a shared machine drifts
more than that between one engine's turn and the next). Writes JSON, a Markdown table
with every figure also as a ratio to llama-server, and a PNG chart.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from .peers import ROOT, Running, free_port, peer_binary

THREADS = 2
N_CTX = 8192
PARALLEL = 8
PROMPT = ("Write a detailed report about the history of sailing ships, their rigging, the trade routes they "
          "followed and the ports they connected. ") * 8
N_GEN = 128
PROMPT_DEPTH = 200  # about PROMPT's length in tokens: llama-bench generates at this depth too
TRIALS = 3
GEN_TRIALS = 5
OVERHEAD_REQUESTS = 60
INTERLEAVED_REQUESTS = 300  # per HTTP engine and round
SHORT_REQUEST = {"prompt": "Hi", "max_tokens": 1, "temperature": 0, "cache_prompt": False}
CLIENTS = (1, 4, 8)
REQUESTS_PER_CLIENT = 2
N_GEN_CONCURRENT = 48

INTERLEAVED = "HTTP engines interleaved"  # the worker that measures the HTTP engines' non-engine time together
ENGINES = ["llamahost (Python)", "llamahost (HTTP)", "llama-server", "llama-bench", "xllamacpp (Python)",
           "llama-cpp-python (Llama)", "llama-cpp-python (server)"]
TARGETS = [  # (label, metric, engine, comparison, reference engine or number, factor)
    ("generation >= 0.98x llama-server", "gen_tps", "llamahost (Python)", ">=", "llama-server", 0.98),
    ("generation >= 0.97x llama-bench", "gen_tps", "llamahost (Python)", ">=", "llama-bench", 0.97),
    ("Python call non-engine time <= 1.0 ms", "overhead_ms", "llamahost (Python)", "<=", 1.0, 1.0),
    ("HTTP non-engine time <= llama-server's", "overhead_ms", "llamahost (HTTP)", "<=", "llama-server", 1.0),
    ("load time <= llama-server's spawn-to-healthy", "load_s", "llamahost (Python)", "<=", "llama-server", 1.0),
    ("4 clients >= llama-server", "tps_4", "llamahost (HTTP)", ">=", "llama-server", 1.0),
    ("4 clients >= xllamacpp", "tps_4", "llamahost (Python)", ">=", "xllamacpp (Python)", 1.0),
    ("4 clients >= 1.5x llama-cpp-python's server", "tps_4", "llamahost (HTTP)", ">=", "llama-cpp-python (server)", 1.5),
]


# -- engines: each gives start(model), complete(prompt, n) -> (n_generated, timings or None),
#    first_token(prompt, n) -> seconds, stop()

class HTTPEngine:
    """Any server speaking /v1/completions on a loopback URL, through one kept-alive client."""

    url = ""
    _client = None

    @property
    def client(self):
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=16))
        return self._client

    def complete(self, prompt, n):
        r = self.client.post(self.url + "/v1/completions", json={
            "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True, "cache_prompt": False})
        r.raise_for_status()
        out = r.json()
        return out["usage"]["completion_tokens"], out.get("timings")

    def first_token(self, prompt, n):
        start = time.perf_counter()
        body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True, "cache_prompt": False}
        first = None
        # upstream's HTTP server may close a kept-alive connection after a stream: not reused
        with self.client.stream("POST", self.url + "/v1/completions", json=body, headers={"Connection": "close"}) as r:
            for line in r.iter_lines():  # read to the end: a stream left running would slow the next request
                if first is None and line.startswith("data:") and line.strip() != "data: [DONE]":
                    choices = json.loads(line[5:]).get("choices") or [{}]
                    if choices[0].get("text"):
                        first = time.perf_counter() - start
        return first if first is not None else time.perf_counter() - start

    def close_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None


class Llamahost:
    def start(self, model):
        from ..engine.server import Server

        self.srv = Server(model, n_ctx=N_CTX, parallel=PARALLEL, threads=THREADS, threads_batch=THREADS)

    def complete(self, prompt, n):
        out = self.srv.complete(prompt, max_tokens=n, temperature=0, ignore_eos=True, cache_prompt=False)
        return out["usage"]["completion_tokens"], out["timings"]

    def first_token(self, prompt, n):
        start = time.perf_counter()
        first = None
        for chunk in self.srv.complete(prompt, max_tokens=n, temperature=0, stream=True, cache_prompt=False):
            if first is None and chunk["choices"] and chunk["choices"][0].get("text"):
                first = time.perf_counter() - start  # and on to the end, as the HTTP engines do
        return first if first is not None else time.perf_counter() - start

    def stop(self):
        self.srv.close()


class LlamahostHTTP(HTTPEngine):
    def start(self, model):
        self.inner = Llamahost()
        self.inner.start(model)
        self.url = self.inner.srv.url

    def stop(self):
        self.close_client()
        self.inner.stop()


class Process(HTTPEngine):
    """A server in a process of its own: load time is spawn to ready, peak RSS is the child's."""

    ready_path = "/health"

    def argv(self, model, port):
        raise NotImplementedError

    def start(self, model):
        port = free_port()
        self.running = Running(self.argv(model, port), port, timeout=300, ready_path=self.ready_path)
        self.url = self.running.url

    def peak_rss_mb(self):
        with open(f"/proc/{self.running.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self):
        self.close_client()
        self.running.__exit__(None, None, None)


class LlamaServer(Process):
    def argv(self, model, port):
        return [str(peer_binary("llama-server")), "-m", model, "-c", str(N_CTX), "-np", str(PARALLEL),
                "-t", str(THREADS), "-tb", str(THREADS), "-lv", "1", "--port", str(port)]


class LlamaCppPythonServer(Process):
    ready_path = "/v1/models"  # it has no /health

    def argv(self, model, port):
        return [sys.executable, "-m", "llama_cpp.server", "--model", model, "--n_ctx", str(N_CTX),
                "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS), "--port", str(port),
                "--host", "127.0.0.1", "--verbose", "False"]


class XLlamacpp:
    def start(self, model):
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = model
        params.n_ctx = N_CTX
        params.n_parallel = PARALLEL
        params.cpuparams.n_threads = THREADS
        params.cpuparams_batch.n_threads = THREADS
        self.srv = xlc.Server(params)

    def complete(self, prompt, n):
        out = self.srv.handle_completions({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                                           "cache_prompt": False})
        return out["usage"]["completion_tokens"], out.get("timings")

    def first_token(self, prompt, n):
        start = time.perf_counter()
        first = []

        def on_chunk(chunk):
            if not first and chunk.get("choices") and chunk["choices"][0].get("text"):
                first.append(time.perf_counter() - start)

        self.srv.handle_completions({"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True,
                                     "cache_prompt": False}, on_chunk)
        return first[0] if first else time.perf_counter() - start

    def stop(self):
        del self.srv


class LlamaCppPython:
    """Its Llama API: no engine timings, and one request at a time."""

    concurrent = False

    def start(self, model):
        from llama_cpp import Llama

        self.llm = Llama(model_path=model, n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)

    def complete(self, prompt, n):
        self.llm.reset()  # no prompt cache, like the others
        out = self.llm.create_completion(prompt, max_tokens=n, temperature=0)
        return out["usage"]["completion_tokens"], None

    def first_token(self, prompt, n):
        self.llm.reset()
        start = time.perf_counter()
        for _ in self.llm.create_completion(prompt, max_tokens=n, temperature=0, stream=True):
            return time.perf_counter() - start
        return time.perf_counter() - start

    def stop(self):
        self.llm.close()


ADAPTERS = {"llamahost (Python)": Llamahost, "llamahost (HTTP)": LlamahostHTTP, "llama-server": LlamaServer,
            "xllamacpp (Python)": XLlamacpp, "llama-cpp-python (Llama)": LlamaCppPython,
            "llama-cpp-python (server)": LlamaCppPythonServer}


def measure(name: str, model: str) -> dict:
    """One engine, in this (fresh) process."""
    if name == "llama-bench":
        return measure_llama_bench(model)
    engine_cls = ADAPTERS[name]
    loads = []
    for _ in range(TRIALS):
        engine = engine_cls()
        start = time.perf_counter()
        engine.start(model)
        engine.complete("Hi", 1)  # ready means answering
        loads.append(time.perf_counter() - start)
        engine.stop()
    engine = engine_cls()
    engine.start(model)
    result = {}
    record(result, "load_s", loads)
    engine.complete(PROMPT, 4)  # warm up

    ttft, prompt_tps, gen_tps = [], [], []
    for trial in range(GEN_TRIALS):
        # A new first word each time: llama-cpp-python's server reuses a cached prefix whatever cache_prompt says
        ttft.append(engine.first_token(f"Trial {trial}a. {PROMPT}", 8))
        start = time.perf_counter()
        n, timings = engine.complete(f"Trial {trial}b. {PROMPT}", N_GEN)
        wall = time.perf_counter() - start
        if timings:
            prompt_tps.append(timings["prompt_per_second"])
            gen_tps.append(timings["predicted_per_second"])
        else:  # no engine timings: generation speed from wall time after the first token
            gen_tps.append((n - 1) / max(wall - ttft[-1], 1e-9))
    result["ttft_ms"] = statistics.median(ttft) * 1000
    record(result, "prompt_tps", prompt_tps)
    record(result, "gen_tps", gen_tps)

    overheads = []
    for _ in range(0 if isinstance(engine, HTTPEngine) else OVERHEAD_REQUESTS):  # HTTP ones: measure_interleaved
        start = time.perf_counter()
        _, timings = engine.complete("Hi", 1)
        wall = (time.perf_counter() - start) * 1000
        if timings is None:
            break
        overheads.append(wall - timings["prompt_ms"] - timings["predicted_ms"])
    record(result, "overhead_ms", overheads)

    for clients in CLIENTS:
        if clients > 1 and not getattr(engine, "concurrent", True):
            result[f"tps_{clients}"] = None
            continue
        # From a fresh load: after a mix of requests the idle slots' cached prompts stay in the unified
        # KV cache and can slow batched decoding by a third, depending on where they landed.
        engine.stop()
        engine = engine_cls()
        engine.start(model)
        engine.complete("Hi", 1)
        record(result, f"tps_{clients}", [concurrent_tps(engine, clients) for _ in range(TRIALS)])

    peak = getattr(engine, "peak_rss_mb", None)
    result["peak_rss_mb"] = peak() if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine.stop()
    return result


def record(result: dict, metric: str, trials: list[float]) -> None:
    """The median of the trials, and their spread (interquartile range / median) to judge a difference by."""
    if not trials:
        result[metric] = None
        return
    median = statistics.median(trials)
    result[metric] = median
    if len(trials) > 1 and median:
        q1, _, q3 = statistics.quantiles(trials, n=4)
        result[f"{metric}_spread"] = (q3 - q1) / median


def merge_rounds(rounds: list[dict]) -> dict:
    """Medians across rounds; a spread is the widest of each round's and of the rounds' own."""
    merged = {}
    for key, _ in METRICS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        merged[key] = statistics.median(values) if values else None
        spreads = [r[f"{key}_spread"] for r in rounds if f"{key}_spread" in r]
        if len(values) > 1 and merged[key]:
            spreads.append((max(values) - min(values)) / merged[key])
        if spreads:
            merged[f"{key}_spread"] = max(spreads)
    merged["rounds"] = len(rounds)
    return merged


def concurrent_tps(engine, clients: int) -> float:
    """Generated tokens per second of wall time with `clients` clients sending requests at once."""
    lock = threading.Lock()
    total = [0]

    def client(index):
        for request in range(REQUESTS_PER_CLIENT):
            n, _ = engine.complete(f"({index}, {request}) {PROMPT[:200]}", N_GEN_CONCURRENT)
            with lock:
                total[0] += n

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return total[0] / (time.perf_counter() - start)


def measure_llama_bench(model: str) -> dict:
    """Prompt speed from an empty context; generation at the depth the servers' requests generate at."""
    out = subprocess.run([str(peer_binary("llama-bench")), "-m", model, "-t", str(THREADS), "-p", str(PROMPT_DEPTH),
                          "-n", str(N_GEN), "-d", f"0,{PROMPT_DEPTH}", "-r", str(GEN_TRIALS), "-o", "json"],
                         capture_output=True, text=True, check=True)
    result = {key: None for key in ("load_s", "ttft_ms", "overhead_ms", "tps_1", "tps_4", "tps_8", "peak_rss_mb")}
    for row in json.loads(out.stdout):
        samples = row.get("samples_ts") or [row["avg_ts"]]
        if row.get("n_prompt") and not row.get("n_gen") and row.get("n_depth", 0) == 0:
            record(result, "prompt_tps", samples)
        elif row.get("n_gen") and not row.get("n_prompt") and row.get("n_depth", 0) == PROMPT_DEPTH:
            record(result, "gen_tps", samples)
    return result


def interleaved_overheads(urls: dict[str, str], requests: int, warmup: int = 10) -> dict[str, list[float]]:
    """Non-engine milliseconds of short completions to servers that are all up at once, taking turns
    in a new random order each time, so that a shared machine's slow spells fall on all of them
    alike. Over http.client, the thinnest client there is: what differs is the servers. A server
    whose answers carry no engine timings gets no figure."""
    body = json.dumps(SHORT_REQUEST)
    connections = {name: http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=600)
                   for name, url in urls.items()}

    def send(name: str) -> tuple[float, dict]:
        connection = connections[name]
        start = time.perf_counter()
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        wall_ms = (time.perf_counter() - start) * 1000
        if response.status != 200:
            raise RuntimeError(f"{name} answered {response.status}: {data[:300]!r}")
        return wall_ms, json.loads(data)

    samples: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for name in list(urls):
            if send(name)[1].get("timings") is None:
                del samples[name]
        for turn in range(warmup + requests):
            order = list(samples)
            random.shuffle(order)
            for name in order:
                wall_ms, out = send(name)
                if turn >= warmup:
                    samples[name].append(wall_ms - out["timings"]["prompt_ms"] - out["timings"]["predicted_ms"])
    finally:
        for connection in connections.values():
            connection.close()
    return samples


def measure_interleaved(names: list[str], model: str) -> dict[str, list[float]]:
    """The HTTP engines among ``names``, all started in (or from) this process."""
    engines = {}
    try:
        for name in names:
            engine = ADAPTERS[name]()
            engine.start(model)
            engines[name] = engine
        return interleaved_overheads({name: engine.url for name, engine in engines.items()}, INTERLEAVED_REQUESTS)
    finally:
        for engine in engines.values():
            engine.stop()


def http_engines(names: list[str]) -> list[str]:
    return [name for name in names if issubclass(ADAPTERS.get(name, object), HTTPEngine)]


METRICS = [("load_s", "load (s)"), ("ttft_ms", "first token (ms)"), ("prompt_tps", "prompt tok/s"),
           ("gen_tps", "generation tok/s"), ("overhead_ms", "non-engine ms/request"), ("tps_1", "1 client tok/s"),
           ("tps_4", "4 clients tok/s"), ("tps_8", "8 clients tok/s"), ("peak_rss_mb", "peak RSS (MiB)")]


def fmt(value, ref):
    if value is None:
        return "n/a"
    text = f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if ref:
        text += f" ({value / ref:.2f}x)"
    return text


def markdown(results: dict, machine: str) -> str:
    ref = results.get("llama-server", {})
    lines = [f"Machine: {machine}", "",
             "| engine | " + " | ".join(label for _, label in METRICS) + " |",
             "|---|" + "---:|" * len(METRICS)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt(row.get(key), ref.get(key)) for key, _ in METRICS) + " |")
    lines += ["", "Ratios in brackets are to llama-server. Targets:", "",
              "| target | value | reference | holds |", "|---|---:|---:|---|"]
    for label, metric, engine, op, reference, factor in TARGETS:
        value = results.get(engine, {}).get(metric)
        ref_value = results.get(reference, {}).get(metric) if isinstance(reference, str) else reference
        if value is None or ref_value is None:
            lines.append(f"| {label} | {value} | {ref_value} | not measured |")
            continue
        holds = value >= factor * ref_value if op == ">=" else value <= factor * ref_value
        noise = max(results[engine].get(f"{metric}_spread", 0.0),
                    results[reference].get(f"{metric}_spread", 0.0) if isinstance(reference, str) else 0.0)
        verdict = "yes" if holds else (
            f"no, within the trials' spread ({noise:.0%})" if abs(value / (factor * ref_value) - 1) <= noise else "NO")
        lines.append(f"| {label} | {value:.2f} | {ref_value:.2f} | {verdict} |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("gen_tps", "generation tok/s"), ("tps_4", "4 clients tok/s"), ("tps_8", "8 clients tok/s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(15, 4.5))
    for ax, (key, label) in zip(axes, keys):
        names = [n for n in results if results[n].get(key) is not None]
        ax.barh(names, [results[n][key] for n in names], color="#4878a8")
        ax.set_title(label)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llamahost bench", description="llamahost against its peers")
    parser.add_argument("--model", help="a GGUF file (default: the demo model)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the JSON, table and chart go")
    parser.add_argument("--engines", nargs="*", default=ENGINES, choices=ENGINES, metavar="ENGINE")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every engine this many times, in turn, so a slow spell of a shared "
                             "machine hits them all (medians across rounds)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        from ..models.demo import demo_model_path

        args.model = str(demo_model_path())
    if args.worker == INTERLEAVED:
        print(json.dumps(measure_interleaved(http_engines(args.engines), args.model)))
        return 0
    if args.worker:
        print(json.dumps(measure(args.worker, args.model)))
        return 0

    rounds: dict[str, list[dict]] = {name: [] for name in args.engines}  # the table keeps the engines' order
    interleaved: dict[str, list[dict]] = {name: [] for name in http_engines(args.engines)}
    for round_index in range(args.rounds):
        shift = round_index % len(args.engines)  # each round starts with another engine: no fixed neighbours in time
        for name in args.engines[shift:] + args.engines[:shift]:
            measured = run_worker(name, args.model, args.engines, round_index, args.rounds)
            if measured is not None:
                rounds[name].append(measured)
        if interleaved:
            measured = run_worker(INTERLEAVED, args.model, args.engines, round_index, args.rounds)
            for name, samples in (measured or {}).items():
                interleaved[name].append({})
                record(interleaved[name][-1], "overhead_ms", samples)
    results = {name: merge_rounds(measured) for name, measured in rounds.items() if measured}
    for name, measured in interleaved.items():
        if measured and name in results:
            merged = merge_rounds(measured)
            results[name]["overhead_ms"] = merged["overhead_ms"]
            results[name]["overhead_ms_spread"] = merged.get("overhead_ms_spread", 0.0)
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, {THREADS} threads, "
               f"Python {platform.python_version()}, model {Path(args.model).name}, {args.rounds} round(s), "
               f"{TRIALS} trials ({GEN_TRIALS} for speeds) per round")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    table = markdown(results, machine)
    try:
        chart(results, out / "benchmarks.png")
        has_chart = True
    except ImportError:
        print("matplotlib is missing, so no chart (bash bench/setup_peers.sh installs it)", file=sys.stderr)
        has_chart = False
    page = out / "BENCHMARKS.md"
    page.write_text(report(table, has_chart, args.engines, kept_notes(page)))
    print(table)
    return 0


def run_worker(name: str, model: str, engines: list[str], round_index: int, rounds: int):
    """One measurement in a fresh process: its JSON, or None (said why) if it failed."""
    print(f"round {round_index + 1}/{rounds}: measuring {name} ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run([sys.executable, "-m", "llamahost.bench", "--worker", name, "--model", model,
                               "--engines", *engines], capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        print(f"  {name} did not finish in 30 minutes; left out of this round", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"  {name} failed: {done.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


NOTES_MARK = "<!-- notes: kept when the benchmark rewrites this page -->"


def kept_notes(page: Path) -> str:
    """What a person wrote under NOTES_MARK on the page the last run made."""
    text = page.read_text() if page.exists() else ""
    return text[text.index(NOTES_MARK):] if NOTES_MARK in text else NOTES_MARK + "\n"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def report(table: str, has_chart: bool, engines: list[str], notes: str) -> str:
    """docs/BENCHMARKS.md: how the figures were made, the table and the chart."""
    lines = ["# Benchmarks: llamahost against its peers", "",
             "Made by `bash bench/setup_peers.sh && bench/.venv/bin/python bench/run.py` "
             "(`llamahost bench --help` for the options). Every engine runs on the same model, thread count "
             "and machine, one engine at a time in a fresh process; each figure is a median of repeated "
             "trials. llama-server and llama-bench are built from this repository's own `vendor/llama.cpp`. "
             "Non-engine time is a request's wall time minus the engine's own prompt and predict times "
             "(a short request, so it is what the binding and transport cost); the HTTP engines' is measured "
             "with all of them up at once, taking turns request by request, over Python's http.client. "
             "Engines measured: "
             + ", ".join(engines) + ".", "", table]
    if has_chart:
        lines += ["", "![generation and concurrent throughput](benchmarks.png)"]
    lines += ["", "Raw figures, with each metric's spread (interquartile range / median): `benchmarks.json`.", "",
              notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
