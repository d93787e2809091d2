"""Model switches and conversations resumed after an unload, measured in one run.

    python bench/switches.py [MODEL] [--rounds N]     (default: the demo model, 6 switches)

Switches: two models (MODEL and a copy of it under another name) behind one endpoint whose
memory holds only one, requested in turn, each request a streamed 1-token completion through
HTTP: its time to first token includes unloading the other model and loading this one. For
llamahost, `llamahost serve A B --memory-budget ...` (its router and pool); for llama-server,
its own router mode, `llama-server --models-dir DIR --models-max 1`. Against it, the same model
alone: a fresh load (`Server(...)`, its plan remembered) and the first token of the same request.

Resumed conversations: a conversation of about 3,000 tokens has a next turn after its model was
unloaded; the time from the load to that turn's first token, with the conversation's slot saved
at the unload and restored at the load (serving/slots.py), and without (slot_cache=0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

FLAGS = ["-c", "4096", "-np", "1", "-t", "2", "-tb", "2", "-lv", "1"]
REQUEST = {"prompt": "Hello", "max_tokens": 1, "temperature": 0, "stream": True, "cache_prompt": False}


def first_token(url: str, model: str) -> float:
    start = time.perf_counter()
    with httpx.stream("POST", url + "/v1/completions", json=dict(REQUEST, model=model), timeout=300,
                      headers={"Connection": "close"}) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                return time.perf_counter() - start
    raise RuntimeError(f"no token from {model}")


def switches(url: str, names: list[str], rounds: int) -> list[float]:
    first_token(url, names[0])  # loaded once, so that each measured request switches
    return [first_token(url, names[(i + 1) % 2]) for i in range(rounds)]


def alone(model: str) -> float:
    import llamahost

    start = time.perf_counter()
    with llamahost.Server.from_args(["-m", model, *FLAGS, "--port", "0"]) as srv:
        return time.perf_counter() - start + first_token(srv.url, "any")


def resumed_turn(model: str, slot_cache: int) -> tuple[float, int]:
    import llamahost

    story = " ".join(f"Chapter {i}: the ship sailed on through the night while the crew kept watch." for i in range(190))
    with llamahost.Pool(idle_ttl=None, slot_cache=slot_cache) as pool:
        handle = pool.get(model, args=FLAGS)
        first = handle.request("POST", "/completion", {"prompt": story, "n_predict": 1, "cache_prompt": True}).json()
        handle.unload()
        start = time.perf_counter()  # the load (and the restore) included
        handle.load()
        handle.request("POST", "/completion", {"prompt": story + " And then?", "n_predict": 1, "cache_prompt": True})
        return time.perf_counter() - start, first["timings"]["prompt_n"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    os.environ["LLAMAHOST_HOME"] = home = tempfile.mkdtemp(prefix="llamahost-switches-")
    from llamahost.bench.peers import Running, free_port, llamahost_serve, peer_binary
    from llamahost.models.demo import demo_model_path
    from llamahost.planning.estimate import estimate

    model = args.model or str(demo_model_path())
    folder = Path(home) / "two"
    folder.mkdir()
    shutil.copy(model, folder / "first.gguf")
    shutil.copy(model, folder / "second.gguf")
    names = ["first", "second"]
    one = estimate(folder / "first.gguf", n_ctx=4096, parallel=1, cache_ram=-1).worst_case_bytes
    budget = f"{int(one * 1.5)}"

    ours_alone = [alone(str(folder / "first.gguf")) for _ in range(3)][1:]  # the first remembers the plan
    with llamahost_serve(["--models-dir", str(folder), "--memory-budget", budget, "--idle-ttl", "0", *FLAGS]) as srv:
        ours = switches(srv.url, names, args.rounds)
    port = free_port()
    with Running([str(peer_binary("llama-server")), "--models-dir", str(folder), "--models-max", "1", *FLAGS,
                  "--port", str(port)], port) as router:
        theirs = switches(router.url, names, args.rounds)

    with_cache, prompt_n = resumed_turn(str(folder / "first.gguf"), 1 << 30)
    without, _ = resumed_turn(str(folder / "first.gguf"), 0)

    ours_s, theirs_s, alone_s = statistics.median(ours), statistics.median(theirs), statistics.median(ours_alone)
    print(f"model: {model}, two copies, memory for one; medians of {args.rounds} switches")
    print("| time to first token | ms | × alone |")
    print("|---|---:|---:|")
    print(f"| llamahost, alone (load + first token) | {alone_s * 1000:.0f} | 1.00 |")
    print(f"| llamahost router, a switch | {ours_s * 1000:.0f} | {ours_s / alone_s:.2f} |")
    print(f"| llama-server --models-max 1, a switch | {theirs_s * 1000:.0f} | {theirs_s / alone_s:.2f} |")
    print(f"switch, llamahost / llama-server: {ours_s / theirs_s:.2f}")
    print(f"a {prompt_n}-token conversation's next turn after an unload, load included: {with_cache * 1000:.0f} ms with "
          f"its slot restored, {without * 1000:.0f} ms without ({without / with_cache:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
