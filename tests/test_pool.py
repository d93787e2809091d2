"""The pool: sharing, loads on demand, idle unloads, the memory budget, failures and restarts,
process isolation, and a clean close. Tiny synthetic models; real servers, real processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import llamahost
from llamahost.bench.procfs import alive, os_threads, rss_bytes

CTX = {"n_ctx": 512, "parallel": 2}


def wait_until(predicate, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.02)


def text(out: dict) -> str:
    return out["choices"][0]["text"]


def test_same_model_and_parameters_share_one_server(tiny_models):
    with llamahost.Pool(idle_ttl=None) as pool:
        a1 = pool.get(tiny_models[0], **CTX)
        a2 = pool.get(tiny_models[0], **CTX)
        assert a1.state == "unloaded"  # nothing loads before the first call
        assert a1.url == a2.url and a1.pid == a2.pid == os.getpid()
        assert text(a2.complete("Hi", max_tokens=2)) is not None
        other_params = pool.get(tiny_models[0], n_ctx=256)
        other_model = pool.get(tiny_models[1], **CTX)
        assert len({a1.url, other_params.url, other_model.url}) == 3
        stats = a1.stats()
        assert stats["handles"] == 2 and stats["loads"] == 1 and stats["requests"] == 1
        a2.close()
        assert a1.stats()["handles"] == 1
        assert a1.tokenize("hello") == other_params.tokenize("hello")  # the same methods as Server
        with pytest.raises(llamahost.ServerClosedError):
            a2.complete("Hi", max_tokens=1)


def test_requests_wait_while_the_model_loads(tiny_models):
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        with ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(lambda i: handle.complete(f"Item {i}", max_tokens=2), range(4)))
        assert all(text(o) is not None for o in outs)
        assert handle.stats()["loads"] == 1 and handle.stats()["requests"] == 4


def test_idle_model_unloads_and_reloads_transparently(tiny_models):
    with llamahost.Pool(idle_ttl=0.5, health_interval=60) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        handle.complete("Hi", max_tokens=1)
        url = handle.url
        wait_until(lambda: handle.state == "unloaded", 10, "the idle unload")
        assert pool.memory_used == 0
        assert text(handle.complete("Hi", max_tokens=1)) is not None
        stats = handle.stats()
        assert stats["loads"] == 2 and stats["unloads"] == 1 and handle.url == url  # the same port again
        handle.unload()  # and on request
        assert handle.state == "unloaded" and handle.stats()["unloads"] == 2


def test_memory_budget_evicts_the_least_recently_used(tiny_models):
    a, b, c = tiny_models
    with llamahost.Pool(idle_ttl=None) as probe:
        need = probe.get(a, **CTX).load().stats()["memory_bytes"]
    with llamahost.Pool(memory_budget=int(need * 2.5), idle_ttl=None) as pool:
        ha, hb, hc = (pool.get(m, **CTX) for m in (a, b, c))
        ha.complete("x", max_tokens=1)
        hb.complete("x", max_tokens=1)
        ha.complete("x", max_tokens=1)  # b is now the least recently used
        hc.complete("x", max_tokens=1)
        assert (ha.state, hb.state, hc.state) == ("loaded", "unloaded", "loaded")
        assert hb.stats()["evictions"] == 1 and pool.memory_used == 2 * need <= pool.memory_budget
        assert text(hb.complete("x", max_tokens=1)) is not None  # reloads, evicting a
        assert ha.state == "unloaded" and ha.stats()["evictions"] == 1
    with llamahost.Pool(memory_budget=need - 1) as small:
        with pytest.raises(llamahost.ModelLoadError, match="memory budget"):
            small.get(a, **CTX).complete("x", max_tokens=1)


def test_a_busy_model_is_not_evicted_the_new_one_waits(tiny_models):
    a, b, _ = tiny_models
    with llamahost.Pool(idle_ttl=None) as probe:
        need = probe.get(a, **CTX).load().stats()["memory_bytes"]
    with llamahost.Pool(memory_budget="%dB" % int(need * 1.5), idle_ttl=None) as pool:
        ha, hb = pool.get(a, **CTX), pool.get(b, **CTX)
        stream = ha.complete("Go on:", max_tokens=100000, ignore_eos=True, stream=True)
        next(stream)
        got = []
        waiter = threading.Thread(target=lambda: got.append(hb.complete("x", max_tokens=1)))
        waiter.start()
        wait_until(lambda: hb.state == "loading", 10, "b waiting for room")
        time.sleep(0.3)  # not a wait for a state: a window in which a wrong eviction would show
        assert ha.state == "loaded" and not got  # a is streaming: b waits
        stream.close()
        waiter.join(30)
        assert got and ha.state == "unloaded" and hb.state == "loaded"


def test_a_dead_server_is_detected_and_restarted(tiny_models, caplog):
    with llamahost.Pool(idle_ttl=None, health_interval=0.1, restart_backoff=(0.05, 1)) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        handle.complete("x", max_tokens=1)
        with caplog.at_level(logging.WARNING, logger="llamahost.pool"):
            handle._peek().close()  # the in-process server stops under the pool, as if its loop died
            wait_until(lambda: handle.stats()["restarts"] == 1 and handle.state == "loaded", 20, "the restart")
        assert handle.stats()["failures"] == 1
        assert any("failed" in r.getMessage() and "restarting" in r.getMessage() for r in caplog.records)
        assert text(handle.complete("x", max_tokens=1)) is not None


def test_process_isolation_survives_sigkill_of_a_worker(tiny_models, caplog):
    with llamahost.Pool(isolation="process", idle_ttl=None, health_interval=0.2) as pool:
        ha, hb = pool.get(tiny_models[0], **CTX), pool.get(tiny_models[1], **CTX)
        assert text(ha.complete("x", max_tokens=1)) is not None and text(hb.complete("x", max_tokens=1)) is not None
        pid_a, pid_b = ha.pid, hb.pid
        assert pid_a != pid_b and os.getpid() not in (pid_a, pid_b)
        stream = ha.complete("Go on:", max_tokens=100000, ignore_eos=True, stream=True)
        next(stream)
        with caplog.at_level(logging.WARNING, logger="llamahost.pool"):
            os.kill(pid_a, signal.SIGKILL)
            with pytest.raises(llamahost.APIError) as in_flight:
                for _ in stream:
                    pass
        assert in_flight.value.status == 503 and in_flight.value.error["type"] == "unavailable_error"
        assert text(hb.complete("x", max_tokens=1)) is not None and hb.pid == pid_b  # the other model: untouched
        assert text(ha.complete("x", max_tokens=1)) is not None  # the next request waits for the restart
        assert ha.pid != pid_a and not alive(pid_a)
        assert ha.stats()["failures"] == 1 and ha.stats()["restarts"] == 1
        assert any("restarting" in r.getMessage() for r in caplog.records)


def test_a_worker_that_stops_answering_is_killed_and_restarted(tiny_models):
    with llamahost.Pool(isolation="process", idle_ttl=None, health_interval=0.2, health_timeout=0.5) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        handle.complete("x", max_tokens=1)
        stuck = handle.pid
        os.kill(stuck, signal.SIGSTOP)
        try:
            wait_until(lambda: handle.stats()["restarts"] == 1, 30, "the restart of a stuck worker")
        finally:
            if alive(stuck):
                os.kill(stuck, signal.SIGCONT)
        assert text(handle.complete("x", max_tokens=1)) is not None and handle.pid != stuck
        wait_until(lambda: not alive(stuck), 10, "the stuck worker's end")


def test_restarts_stop_after_max_restarts_failures_in_five_minutes(tiny_models, caplog):
    """As the README says: restarted up to max_restarts times; one more failure, and the model
    waits for the next request, which loads it again."""
    with llamahost.Pool(idle_ttl=None, health_interval=0.05, restart_backoff=(0.01, 0.02), max_restarts=3) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        handle.load()
        for restarts in range(1, 4):
            handle._peek().close()
            wait_until(lambda: handle.stats()["restarts"] == restarts and handle.state == "loaded", 20, "a restart")
        with caplog.at_level(logging.ERROR, logger="llamahost.pool"):
            handle._peek().close()
            wait_until(lambda: handle.state == "unloaded", 20, "giving up")
        assert handle.state == "unloaded" and handle.stats()["restarts"] == 3 and handle.stats()["failures"] == 4
        assert any("4 failures" in r.getMessage() and "not restarted" in r.getMessage() for r in caplog.records)
        assert text(handle.complete("x", max_tokens=1)) is not None  # the next request loads it again


def test_a_restart_that_hangs_holds_up_no_other_model(tiny_models, tmp_path):
    """Model a's restart never finishes (its file became a FIFO no one writes: the worker blocks
    reading it); model b's worker dies meanwhile, and is restarted all the same."""
    import shutil

    a_path = shutil.copy(tiny_models[0], tmp_path / "a.gguf")
    with llamahost.Pool(isolation="process", idle_ttl=None, health_interval=0.1, health_timeout=1,
                        restart_backoff=(0.05, 0.1), load_timeout=120) as pool:
        ha, hb = pool.get(a_path, **CTX), pool.get(tiny_models[1], **CTX)
        ha.load(), hb.load()
        os.remove(a_path)
        os.mkfifo(a_path)
        os.kill(ha.pid, signal.SIGKILL)
        wait_until(lambda: ha.state == "loading", 10, "a's restart")
        pid_b = hb.pid
        os.kill(pid_b, signal.SIGKILL)
        wait_until(lambda: hb.stats()["restarts"] == 1 and hb.state == "loaded", 20, "b's restart")
        assert ha.state == "loading" and text(hb.complete("x", max_tokens=1)) is not None


def test_unloading_returns_the_memory_in_process(tiny_models):
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        handle.load().unload()  # what a first load sets up once (backend threads, caches) stays
        before = rss_bytes(os.getpid())
        handle.complete("x", max_tokens=1)
        loaded = rss_bytes(os.getpid())
        handle.unload()
        assert rss_bytes(os.getpid()) - before < (loaded - before) / 2, (before, loaded, rss_bytes(os.getpid()))


def test_unloading_a_worker_returns_its_memory(tiny_models):
    with llamahost.Pool(isolation="process", idle_ttl=None) as pool:
        handle = pool.get(tiny_models[0], **CTX)
        handle.complete("x", max_tokens=1)
        worker, parent_before = handle.pid, rss_bytes(os.getpid())
        assert rss_bytes(worker) > handle.stats()["memory_bytes"]
        handle.unload()
        assert not alive(worker)  # its whole address space went back to the system
        assert rss_bytes(os.getpid()) - parent_before < 32 << 20


def test_close_leaves_no_worker_and_no_thread(tiny_models):
    threads_before, os_threads_before = set(threading.enumerate()), os_threads()
    pool = llamahost.Pool(isolation="process", health_interval=0.1)
    handles = [pool.get(m, **CTX) for m in tiny_models[:2]]
    pids = [h.load().pid for h in handles]
    pool.close()
    assert not any(alive(p) for p in pids)
    assert set(threading.enumerate()) <= threads_before and os_threads() <= os_threads_before
    with pytest.raises(llamahost.ServerClosedError):
        handles[0].complete("x", max_tokens=1)


SCRIPT = """
import os, sys, llamahost
pool = llamahost.Pool(isolation="process")
print(pool.get(sys.argv[1], n_ctx=512).load().pid, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_no_worker_outlives_the_interpreter(tiny_model, ending):
    # "exit": leaves without close() (the pool closes at exit); "kill": SIGKILL, the worker sees its stdin close
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model), ending], capture_output=True, text=True,
                          timeout=120)
    worker = int(done.stdout.split()[0])
    wait_until(lambda: not alive(worker), 15, "the worker's end")


def test_a_budget_holds_while_prompt_caches_fill(tmp_path):
    """Distinct long prompts, one after another, fill each server's prompt cache (upstream keeps a
    slot's last prompt when the slot takes another): the process's real memory (RSS) stays within
    the pool's budget, plus 256 MiB for the interpreter and the allocator's slack. At llama-server's
    default of 8 GiB of prompt cache per server, this run adds about 1.5 GiB."""
    import random

    import synthetic

    # 32 KiB of KV cache per token (8 layers of 512-wide f32 keys and values), little compute
    model = synthetic.write_model(tmp_path / "kv-heavy.gguf", "llama", n_layer=8, n_embd=512, n_head=8, n_head_kv=8,
                                  n_ff=64, n_ctx_train=4096)
    params = dict(n_ctx=4096, parallel=1, cache_type_k="f32", cache_type_v="f32", threads=2)
    budget = 1 << 30
    words = [f"w{i}" for i in range(5000)]
    rng = random.Random(7)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_bytes(os.getpid()))

    before = rss_bytes(os.getpid())
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with llamahost.Pool(memory_budget=budget, idle_ttl=None) as pool:
            handle = pool.get(model, **params)
            needs = handle.stats()["memory_bytes"] if handle.load() else 0
            assert 0 < needs <= budget
            for _ in range(24):  # about 1,500 tokens each
                handle.complete(" ".join(rng.choices(words, k=500)), max_tokens=1)
    finally:
        stop.set()
        sampler.join()
    growth = peak[0] - before
    assert growth <= budget + (256 << 20), f"RSS grew by {growth / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB"
