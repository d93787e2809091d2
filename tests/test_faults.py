"""Faults: a worker killed under load, clients that leave in the middle of a stream, close()
during a load and during generation, user code that raises or a Ctrl-C while a stream is
read, a full disk and an unwritable cache during a download, and 50 servers created and
closed. After each: no hang, no crash, nothing left behind, and the next request succeeds.
Loopback only; every loop is bounded."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

import llamahost
from llamahost import Router
from test_models import gguf_files, home, hub, run_cli  # noqa: F401 - the Hub fixtures
from llamahost.bench.leaks import create_close
from llamahost.bench.procfs import alive, children, cmdline, os_threads
from test_pool import wait_until

LONG = {"max_tokens": 100000, "ignore_eos": True}  # a generation that runs until stopped
N_CTX = 4096  # the tiny model's training context: LONG left alone decodes about this many tokens


def idle(client) -> bool:
    return not any(s["is_processing"] for s in client.request("GET", "/slots").json())


def decodes(client) -> float:
    """The engine's llama_decode calls so far (/metrics): a cancelled generation stops adding to them."""
    for line in client.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("llamacpp:n_decode_total "):
            return float(line.split()[1])
    raise AssertionError("no llamacpp:n_decode_total in /metrics (a server started with metrics=True?)")


def assert_cancelled(client, decodes_before: float, what: str) -> None:
    """Idle again, well before the LONG generation could have filled the context by itself."""
    wait_until(lambda: idle(client), 10, what)
    spent = decodes(client) - decodes_before
    assert spent < N_CTX / 4, f"{what}: {spent:.0f} decodes, as if nothing had stopped the generation"


def sigint_once(condition, timeout: float = 30) -> threading.Thread:
    """A real SIGINT to this process (as Ctrl-C sends) once ``condition()`` holds; none if it
    never does (``sender.sent`` says which), so that a late one cannot hit another test."""
    def send() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        sender.sent = True
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send, daemon=True)
    sender.sent = False
    sender.start()
    return sender


@pytest.fixture(autouse=True)
def no_thread_left(request, demo_model):
    """Every fault test but the download ones ends with this process's OS threads (the engine's
    C++ threads among them) back to their number before it: nothing a fault left behind."""
    if request.node.get_closest_marker("download"):
        yield
        return
    with llamahost.Server(demo_model, n_ctx=512) as srv:  # the compute threads a first load starts, which stay
        srv.complete("Hi", max_tokens=1)
    before = os_threads()
    yield
    wait_until(lambda: os_threads() <= before, 30, f"the threads to end ({os_threads()} now, {before} before)")


# -- workers and clients that go away ----------------------------------------------------------

def test_sigkill_of_a_worker_under_load(tiny_models):
    with llamahost.Pool(isolation="process", idle_ttl=None, health_interval=0.2) as pool:
        handle = pool.get(tiny_models[0], n_ctx=1024, parallel=4)
        killed = handle.load().pid
        outcomes: Counter = Counter()
        lock = threading.Lock()

        def client(i: int) -> None:
            for n in range(30):
                try:
                    if (i + n) % 2:
                        list(handle.complete(f"Story {i}:", max_tokens=24, stream=True))
                    else:
                        handle.complete(f"Story {i}:", max_tokens=24)
                    outcome = "ok"
                except llamahost.APIError as exc:
                    outcome = f"{exc.status} {exc.error.get('type') if isinstance(exc.error, dict) else exc.error}"
                except Exception as exc:  # noqa: BLE001 - counted, and the test fails on it
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    outcomes[outcome] += 1

        clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for c in clients:
            c.start()
        wait_until(lambda: outcomes["ok"] >= 4, 60, "requests under load")
        os.kill(killed, signal.SIGKILL)
        for c in clients:
            c.join(180)
        assert not any(c.is_alive() for c in clients)
        assert set(outcomes) <= {"ok", "503 unavailable_error"}, outcomes
        assert sum(outcomes.values()) == 4 * 30 and outcomes["ok"] > 4, outcomes
        assert handle.complete("x", max_tokens=1)["choices"] and handle.pid != killed and not alive(killed)
        assert handle.stats()["restarts"] == 1, handle.stats()


def test_client_leaving_mid_stream_over_http_cancels_the_generation(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=N_CTX, parallel=1, metrics=True) as srv:
        for _ in range(3):
            before = decodes(srv)
            with httpx.stream("POST", srv.url + "/v1/completions", json=dict(LONG, prompt="Go on:", stream=True),
                              timeout=30) as r:
                next(r.iter_raw())
            assert_cancelled(srv, before, "the generation's end after the client left")
        assert srv.complete("Hi", max_tokens=2)["choices"]


def test_client_leaving_mid_stream_through_the_router(tiny_model):
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_model, n_ctx=N_CTX, parallel=1, metrics=True)
        with Router(pool, {"m": handle}, port=0) as router:
            before = decodes(handle)
            with httpx.stream("POST", router.url + "/v1/completions", timeout=30,
                              json=dict(LONG, model="m", prompt="Go on:", stream=True)) as r:
                next(r.iter_raw())
            assert_cancelled(handle, before, "the generation's end after the client left")
            assert httpx.post(router.url + "/v1/completions", json={"model": "m", "prompt": "Hi", "max_tokens": 2},
                              timeout=30).status_code == 200
            assert handle.stats()["in_flight"] == 0


# -- close() and Ctrl-C while loading or generating ----------------------------------------------

@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_pool_close_during_a_load(demo_model, isolation):
    threads = os_threads()
    pool = llamahost.Pool(isolation=isolation, idle_ttl=None)
    handle = pool.get(demo_model, n_ctx=512)
    ended: list[BaseException] = []

    def load() -> None:
        try:
            handle.load()
        except BaseException as exc:  # noqa: BLE001 - what the load ended with is the finding
            ended.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    wait_until(lambda: handle.state == "loading", 30, "the load's start")
    if isolation == "thread":  # the engine is loading the model
        wait_until(lambda: any(t.name == "llamahost-load" for t in threading.enumerate()), 30, "the engine's load")
    else:  # the worker process is loading it
        wait_until(lambda: any("llamahost.serving.worker" in cmdline(pid) for pid in children(os.getpid())), 30,
                   "the worker's start")
    pool.close()
    loader.join(60)
    assert not loader.is_alive()
    assert len(ended) == 1 and isinstance(ended[0], llamahost.ServerClosedError), ended
    wait_until(lambda: os_threads() <= threads, 30, "the load's threads to end")


def test_ctrl_c_during_a_load_stops_it(demo_model):
    with llamahost.Server(demo_model, n_ctx=512) as srv:  # the compute threads a first load starts, which stay
        srv.complete("Hi", max_tokens=1)
    threads = os_threads()
    sender = sigint_once(lambda: any(t.name == "llamahost-load" for t in threading.enumerate()))
    with pytest.raises(KeyboardInterrupt):
        llamahost.Server(demo_model, n_ctx=512)
    sender.join()
    wait_until(lambda: os_threads() <= threads, 30, "the engine's threads to end")
    with llamahost.Server(demo_model, n_ctx=512) as srv:
        assert srv.complete("Hi", max_tokens=2)["choices"]


def test_close_during_generation_ends_every_request(tiny_model):
    threads = os_threads()
    srv = llamahost.Server(tiny_model, n_ctx=2048, parallel=4)
    ended: list[BaseException] = []

    def generate(stream: bool) -> None:
        try:
            if stream:
                list(srv.complete("Go on:", stream=True, **LONG))
            else:
                srv.complete("Go on:", **LONG)
        except BaseException as exc:  # noqa: BLE001 - what the request ended with is the finding
            ended.append(exc)

    requests = [threading.Thread(target=generate, args=(i % 2 == 0,)) for i in range(4)]
    for r in requests:
        r.start()
    wait_until(lambda: sum(s["is_processing"] for s in srv.request("GET", "/slots").json()) == 4, 30,
               "four generations")
    started = time.monotonic()
    srv.close()
    for r in requests:
        r.join(30)
    assert time.monotonic() - started < 30 and not any(r.is_alive() for r in requests)
    assert len(ended) == 4 and all(isinstance(e, (llamahost.ServerClosedError, llamahost.APIError)) for e in ended)
    wait_until(lambda: os_threads() <= threads, 10, "the server's threads to end")


def test_an_exception_in_the_code_reading_a_stream(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=N_CTX, parallel=1, metrics=True) as srv:
        def read_then_fail() -> None:
            for _ in srv.chat([{"role": "user", "content": "Go on"}], stream=True, **LONG):
                raise LookupError("a bug in the user's code")

        before = decodes(srv)
        with pytest.raises(LookupError):
            read_then_fail()
        assert_cancelled(srv, before, "the generation's end")

        async def read_async_then_fail() -> None:
            async for _ in srv.acomplete("Go on:", stream=True, **LONG):
                raise LookupError("a bug in the user's async code")

        before = decodes(srv)
        with pytest.raises(LookupError):
            asyncio.run(read_async_then_fail())
        assert_cancelled(srv, before, "the async generation's end")
        assert srv.complete("Hi", max_tokens=2)["choices"]


@pytest.mark.parametrize("isolation", ["in-process", "thread", "process"])
def test_a_task_cancelled_while_it_awaits_a_chunk(tiny_model, isolation):
    """asyncio's cancellation: the task gets CancelledError (not 'generator already executing'),
    the generation stops, and the model serves the next request."""
    with llamahost.Pool(idle_ttl=None, isolation="process" if isolation == "process" else "thread") as pool:
        client = (llamahost.Server(tiny_model, n_ctx=N_CTX, parallel=1, metrics=True) if isolation == "in-process"
                  else pool.get(tiny_model, n_ctx=N_CTX, parallel=1, metrics=True))
        try:
            before = decodes(client)
            started = asyncio.Event()

            async def read() -> None:
                async for _ in client.achat([{"role": "user", "content": "Go on"}], stream=True, **LONG):
                    started.set()

            async def main() -> None:
                task = asyncio.create_task(read())
                await started.wait()
                await asyncio.sleep(0.05)  # the task now waits for a chunk
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

            asyncio.run(main())
            assert_cancelled(client, before, "the cancelled task's generation")
            assert client.complete("Hi", max_tokens=2)["choices"]
        finally:
            client.close()


def test_ctrl_c_while_reading_a_stream(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=N_CTX, parallel=1, metrics=True) as srv:
        read = 0
        before = decodes(srv)
        sender = sigint_once(lambda: read >= 3)
        with pytest.raises(KeyboardInterrupt):
            for _ in srv.complete("Go on:", stream=True, **LONG):
                read += 1
        sender.join()
        assert sender.sent
        assert_cancelled(srv, before, "the generation's end")
        assert srv.complete("Hi", max_tokens=2)["choices"]


# -- downloads that cannot be written --------------------------------------------------------------

def _pull_with_file_size_limit(limit: int) -> subprocess.CompletedProcess:
    """``llamahost pull`` in a process that can write no file larger than ``limit`` bytes: each
    write past it fails with EFBIG, as a write to a full disk fails with ENOSPC."""
    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "llamahost", "pull", "test-org/chat-GGUF"], capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_writes)


@pytest.mark.download
def test_a_full_disk_during_a_download_leaves_the_library_consistent(hub, home):
    done = _pull_with_file_size_limit(1 << 20)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "llamahost pull:" in done.stderr
    assert llamahost.list_models() == [] and not list((home / "models").rglob("chat-F32.gguf"))
    model = llamahost.pull("test-org/chat-GGUF")  # with room again, the pull completes
    assert [m.name for m in llamahost.list_models()] == [model.name]


@pytest.mark.download
def test_an_unwritable_cache_during_a_download(hub, home):
    home.mkdir(parents=True)
    (home / "models").write_text("a file where the cache's models folder should be")
    done = run_cli("pull", "test-org/chat-GGUF")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "llamahost pull:" in done.stderr
    assert llamahost.list_models() == []
    (home / "models").unlink()
    assert llamahost.pull("test-org/chat-GGUF").path.is_file()


# -- leaks ---------------------------------------------------------------------------------------

def test_fifty_servers_created_and_closed(tiny_model):
    result = create_close(tiny_model, 50)
    assert result["rss_growth_mib"] < 10, f"RSS grew by {result['rss_growth_mib']} MiB over 50 servers"
    assert result["os_threads_after"] == result["os_threads_before"] and result["python_threads_left"] == []
