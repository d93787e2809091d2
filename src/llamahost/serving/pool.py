"""``Pool``: one shared server per model and parameters, loaded on demand, unloaded when
idle or to make room within a memory budget, watched, and restarted when it fails.

    with llamahost.Pool(memory_budget="8GiB", idle_ttl=300) as pool:
        llm = pool.get("model.gguf", n_ctx=4096)   # a Handle: the calls of Server
        llm.chat([{"role": "user", "content": "hi"}])

With ``isolation="thread"`` a model is a ``Server`` in this process; with
``isolation="process"`` it is a ``Worker`` process, so a crash in the engine takes down
that model alone.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..core import cmdline, config, rpc
from ..core.transport import Chunks, Response, free_port, health_status
from ..engine import plans
from ..engine.client import Client
from ..engine.server import Server, command_line
from ..errors import LlamahostError, ModelLoadError, ServerClosedError
from ..planning.estimate import Estimate, engine_dry_run, from_engine
from .slots import SlotFiles

log = logging.getLogger("llamahost.pool")

UNLOADED, LOADING, LOADED, FAILED = "unloaded", "loading", "loaded", "failed"
COUNTERS = ("requests", "loads", "unloads", "evictions", "failures", "restarts")
FAILURE_WINDOW = 300.0  # seconds over which failures count towards the restart backoff and limit


@dataclass(eq=False)
class _Model:
    """One model with its parameters in a pool: its server when loaded, and its counters."""

    path: str  # the GGUF
    args: list[str]  # llama-server's command line
    key: tuple
    api_keys: list[str]  # what its server asks of HTTP clients (--api-key, --api-key-file, LLAMA_ARG_API_KEY)
    state: str = UNLOADED
    isolated: bool = False  # served by a worker process: the pool's isolation, or RPC workers
    backend: Any = None  # a Server (thread isolation) or a Worker (process isolation)
    port: int = 0  # kept across reloads, so the model's url stays the same
    plan: Estimate | None = None  # the engine's dry run of ``args``: bytes per device
    slot_folder: Path | None = None  # where its slots are saved when it unloads (serving/slots.py)

    @property
    def needs(self) -> int | None:
        """All its server can come to hold on this machine's devices together (the prompt cache
        at its limit); RPC workers' devices are their machines'."""
        if self.plan is None:
            return None
        return self.plan.worst_case_bytes - sum(d.worst_case for d in self.plan.devices if rpc.is_remote(d.name))
    refs: int = 0  # open handles
    in_flight: int = 0
    waiting: int = 0  # requests waiting for a load
    last_used: float = 0.0
    attempts: int = 0  # loads tried, to tell waiters whether the one they waited for failed
    error: BaseException | None = None
    retry_at: float = 0.0
    failed_at: list[float] = field(default_factory=list)
    health_misses: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    on_state: Callable[["_Model"], None] | None = field(default=None, repr=False)  # the pool's watchers

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def __setattr__(self, name: str, value: Any) -> None:
        """Every change of ``state`` reaches the pool's watchers (the lock is held)."""
        changed = name == "state" and getattr(self, "state", value) != value
        super().__setattr__(name, value)
        if changed and self.on_state is not None:
            self.on_state(self)


class Pool:
    """Shared model servers: ``pool.get(model, **params)`` returns a ``Handle``.

    ``memory_budget``: bytes or a text like ``"8GiB"``; None = this machine's free memory
    (all devices). A model that would not fit evicts the least recently used idle ones,
    by the engine's estimate of what it holds (host and device bytes). ``idle_ttl``:
    seconds without a request after which a model is unloaded (None: never).
    ``isolation``: ``"thread"`` (servers in this process) or ``"process"`` (a worker
    process per model). A model whose server died or stopped answering /health (checked
    every ``health_interval`` seconds, ``health_timeout`` each) is restarted after
    ``restart_backoff[0]`` seconds, doubling up to ``restart_backoff[1]``, at most
    ``max_restarts`` times in five minutes; after that it waits for the next request.
    ``slot_cache``: bytes (or a text like ``"2GiB"``) of conversations kept on disk for models
    that were unloaded, restored when they load again (serving/slots.py; 0 or None: none).
    Events go to the ``llamahost.pool`` logger; counters are in ``stats()``.
    """

    def __init__(self, memory_budget: int | str | None = None, idle_ttl: float | None = 300,
                 isolation: str = "thread", *, health_interval: float = 10.0, health_timeout: float = 5.0,
                 restart_backoff: tuple[float, float] = (0.25, 30.0), max_restarts: int = 5,
                 load_timeout: float = 600.0, slot_cache: int | str | None = "2GiB"):
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', not {isolation!r}")
        if idle_ttl is not None and idle_ttl <= 0:
            raise ValueError(f"idle_ttl must be a positive number of seconds or None, not {idle_ttl!r}")
        if memory_budget is None:
            from ..core.devices import devices

            memory_budget = sum(d["memory_free"] for d in devices())
        self.memory_budget = config.parse_size(memory_budget)
        self.idle_ttl = idle_ttl
        self.isolation = isolation
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.restart_backoff = restart_backoff
        self.max_restarts = max_restarts
        self.load_timeout = load_timeout
        self._slots = SlotFiles(config.parse_size(slot_cache) if slot_cache else 0)
        self._models: dict[tuple, _Model] = {}
        # servers unloaded under the lock, to close outside it (their slots saved first where a folder is given)
        self._to_close: list[tuple[Client, Path | None]] = []
        self._closing = 0  # of those, being closed by some thread now (a load waits for them: their port, memory)
        self._cond = threading.Condition()  # reentrant: a handle's __del__ may run while it is held
        self._closed = threading.Event()  # set by close(): loads in progress watch it and stop
        self._restarts: set[threading.Thread] = set()  # the monitor's restarts in progress
        self._watchers: list[Callable[[tuple, str], None]] = []
        self._monitor = threading.Thread(target=self._watch, name="llamahost-pool", daemon=True)
        self._monitor.start()
        _open_pools.add(self)

    # -- handles -------------------------------------------------------------------------------

    def get(self, model: str | os.PathLike, *, args: Sequence[str] = (), **params: Any) -> "Handle":
        """A handle to the shared server for ``model`` with these Server parameters (and
        ``args``: more llama-server flags, verbatim). Nothing loads until the first call."""
        ref = os.fspath(model)
        extra = [str(a) for a in args]
        key = (ref, json.dumps(params, sort_keys=True, default=str), tuple(extra))
        with self._cond:
            self._check_open()
            entry = self._models.get(key)
        if entry is None:
            cmd = command_line(ref, _bounded_prompt_cache(params)) + extra
            settings = cmdline.read(cmd)  # upstream's parser checks the flags now (ValueError), not at the first call
        with self._cond:
            self._check_open()
            # a lost RPC worker ends the process using it (llama.cpp aborts): always a worker process
            entry = self._models.setdefault(key, entry or _Model(settings["model"], cmd, key, settings["api_keys"],
                                                                 isolated=self.isolation == "process"
                                                                 or settings["rpc"] is not None,
                                                                 on_state=self._state_changed))
            entry.refs += 1
        return Handle(self, entry)

    def watch(self, callback: Callable[[tuple, str], None]) -> None:
        """Call ``callback(handle.key, state)`` on each change of a model's state ("loading",
        "loaded", "unloaded", "failed"), with the pool's lock held: it must be quick."""
        with self._cond:
            self._watchers.append(callback)

    def _state_changed(self, m: _Model) -> None:
        for callback in self._watchers:
            callback(m.key, m.state)

    def stats(self) -> list[dict]:
        """Per model: state, memory, handles, requests in flight and waiting, and counters."""
        with self._cond:
            return [self._stats(m) for m in self._models.values()]

    @property
    def memory_used(self) -> int:
        """Bytes the loaded (and loading) models hold, by their estimates."""
        with self._cond:
            return self._used()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Unload every model and stop the pool's thread: no worker process or thread is left."""
        with self._cond:
            if self._closed.is_set():
                return
            self._closed.set()
            for m in self._models.values():
                if m.backend is not None:
                    self._to_close.append((m.backend, None))
                m.backend, m.state = None, UNLOADED
            self._cond.notify_all()
        self._monitor.join()
        for thread in list(self._restarts):
            thread.join()
        self._close_unloaded()
        _open_pools.discard(self)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        loaded = sum(m.state == LOADED for m in self._models.values())
        return (f"<llamahost.Pool {self.isolation} isolation, {loaded} of {len(self._models)} models loaded, "
                f"{self.memory_used} of {self.memory_budget} bytes>")

    # -- requests ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ServerClosedError("the pool is closed")

    def _acquire(self, m: _Model, *, request: bool = True) -> Client:
        """The model's server, loaded first if need be (requests wait while it loads); the
        caller holds it in flight until _release."""
        while True:
            with self._cond:
                self._check_open()
                if m.state == LOADED:
                    m.in_flight += 1
                    m.last_used = time.monotonic()
                    if request:
                        m.counts["requests"] += 1
                    return m.backend
                now = time.monotonic()
                if m.state == LOADING or (m.state == FAILED and now < m.retry_at):
                    attempt = m.attempts
                    m.waiting += 1
                    try:
                        self._cond.wait(None if m.state == LOADING else m.retry_at - now)
                    finally:
                        m.waiting -= 1
                    if m.attempts > attempt and m.state == UNLOADED and m.error is not None:
                        raise m.error  # the load this request waited for failed
                    continue
                restart, m.state = m.state == FAILED, LOADING
            self._load(m, restart)

    def _release(self, m: _Model) -> None:
        with self._cond:
            m.in_flight -= 1
            m.last_used = time.monotonic()
            self._cond.notify_all()

    def _lost(self, m: _Model, backend: Client, error: Exception) -> str:
        """A request found the model's server gone: if it died, restart it. Returns the reason."""
        deadline = time.monotonic() + 1.0
        while backend.running and time.monotonic() < deadline:  # a killed process takes a moment to be reaped
            time.sleep(0.01)
        with self._cond:
            if self._closed.is_set():
                return "the pool is closed"
            if m.backend is not backend or backend.running:
                return str(error)  # already handled, or alive: the health check decides
            reason = f"the server stopped ({getattr(backend, 'exit_reason', None) or error})"
            self._fail(m, reason)
        backend.close()
        return reason + ("; restarting" if m.state == FAILED else "")

    # -- loading and unloading ------------------------------------------------------------------

    def _load(self, m: _Model, restart: bool) -> None:
        """Load a model this thread set LOADING, after making room for it."""
        try:
            if m.plan is None:
                m.plan = _plan(m.path, m.args)
            self._make_room(m)
            self._close_unloaded(wait=True)  # a model reloaded takes its port again, another its memory
            port, args = cmdline.take_option(m.args, "--port")
            args, m.slot_folder = self._slots.args_for(args)
            if not m.port:
                m.port = int(port or 0) or free_port()
            started = time.perf_counter()
            if m.isolated:
                from .worker import Worker

                backend = Worker(args, m.port, model_path=m.path, api_key=m.api_keys[0] if m.api_keys else None,
                                 load_timeout=self.load_timeout, cancel=self._closed)
            else:
                backend = Server.from_args(args + ["--port", str(m.port)], cancel=self._closed)
            if m.slot_folder is not None:
                self._restore_slots(m, backend)
        except BaseException as exc:
            with self._cond:
                m.attempts += 1
                if restart and not self._closed.is_set():
                    self._fail(m, f"restarting failed: {exc}")  # tried again after a longer backoff
                else:
                    m.state, m.error = UNLOADED, exc
                    log.error("loading %s failed: %s", m.name, exc)
                self._cond.notify_all()
            raise
        with self._cond:
            m.attempts += 1
            if self._closed.is_set():
                m.state = UNLOADED
                backend.close()
                raise ServerClosedError("the pool is closed")
            m.state, m.backend, m.error, m.health_misses = LOADED, backend, None, 0
            m.last_used = time.monotonic()
            m.counts["loads"] += 1
            m.counts["restarts"] += restart
            self._cond.notify_all()
        log.info("%s %s in %.2f s (%s, %.0f MiB estimated, %s)", "restarted" if restart else "loaded", m.name,
                 time.perf_counter() - started, backend.url, m.needs / 2**20,
                 f"pid {backend.pid}" if m.isolated else "in-process")

    def _make_room(self, m: _Model) -> None:
        """Evict least recently used idle models until ``m`` fits in the budget; wait while
        the models in the way are busy."""
        if m.needs > self.memory_budget:
            raise ModelLoadError(m.path, f"needs {m.needs / 2**20:.0f} MiB, more than the pool's memory budget "
                                         f"of {self.memory_budget / 2**20:.0f} MiB")
        deadline = time.monotonic() + self.load_timeout
        with self._cond:
            while True:
                self._check_open()
                if self._used() <= self.memory_budget:  # m, LOADING, is counted
                    return
                idle = [o for o in self._models.values() if o is not m and o.state == LOADED and o.in_flight == 0]
                if idle:
                    victim = min(idle, key=lambda o: o.last_used)
                    log.info("evicting %s to make room for %s", victim.name, m.name)
                    self._unload_locked(victim, "evictions")
                    continue
                if time.monotonic() > deadline:
                    raise ModelLoadError(m.path, "no room in the pool's memory budget: the other models stayed busy")
                self._cond.wait(1.0)

    def _used(self) -> int:
        return sum(o.needs or 0 for o in self._models.values() if o.state in (LOADING, LOADED))

    def _unload_locked(self, m: _Model, counter: str) -> None:
        """Unload a loaded, idle model (the lock is held); its server is closed by _close_unloaded."""
        backend, m.backend, m.state = m.backend, None, UNLOADED
        m.counts[counter] += 1
        if m.refs == 0:
            self._models.pop(m.key, None)
        self._cond.notify_all()
        self._to_close.append((backend, m.slot_folder))

    def _unload(self, m: _Model) -> None:
        """Unload now, waiting for the requests in flight (Handle.unload)."""
        with self._cond:
            while m.state == LOADING or m.in_flight:
                self._cond.wait()
            if m.state == LOADED:
                self._unload_locked(m, "unloads")
        self._close_unloaded()

    def _close_unloaded(self, wait: bool = False) -> None:
        """Close the servers unloaded so far; ``wait``: also for those other threads are closing."""
        with self._cond:
            backends, self._to_close = self._to_close, []
            self._closing += len(backends)
        try:
            for backend, slot_folder in backends:
                if slot_folder is not None:
                    try:
                        saved = self._slots.save(backend, slot_folder)
                        if saved:
                            log.info("saved %d conversation(s) of %s", saved, slot_folder.name)
                    except (OSError, ValueError, LlamahostError) as exc:
                        log.warning("could not save the conversations of %s: %s", slot_folder.name, exc)
                backend.close()  # a closed Server hands the heap it freed back to the system
        finally:
            with self._cond:
                self._closing -= len(backends)
                self._cond.notify_all()
                while wait and self._closing:
                    self._cond.wait()

    def _restore_slots(self, m: _Model, backend: Client) -> None:
        try:
            restored = self._slots.restore(backend, m.slot_folder)
            if restored:
                log.info("restored %d conversation(s) of %s", restored, m.name)
        except (OSError, ValueError, LlamahostError) as exc:
            log.warning("could not restore the conversations of %s: %s", m.name, exc)

    # -- failures ------------------------------------------------------------------------------

    def _fail(self, m: _Model, reason: str) -> None:
        """The model's server died or stopped answering (the lock is held): restart it after
        the backoff, or give up after too many failures."""
        now = time.monotonic()
        m.failed_at = [t for t in m.failed_at if now - t < FAILURE_WINDOW] + [now]
        m.counts["failures"] += 1
        m.backend, m.health_misses = None, 0
        if len(m.failed_at) > self.max_restarts:
            m.state, m.error = UNLOADED, ModelLoadError(m.path, f"failed {len(m.failed_at)} times in "
                                                                f"{FAILURE_WINDOW:.0f} s, last: {reason}")
            log.error("%s failed: %s; %d failures in %.0f s, not restarted", m.name, reason, len(m.failed_at),
                      FAILURE_WINDOW)
        else:
            first, most = self.restart_backoff
            delay = min(first * 2 ** (len(m.failed_at) - 1), most)
            m.state, m.error, m.retry_at = FAILED, None, now + delay
            log.warning("%s failed: %s; restarting in %.2f s", m.name, reason, delay)
        self._cond.notify_all()

    # -- the monitor: idle unloads, restarts, health checks -------------------------------------

    def _watch(self) -> None:
        next_check = time.monotonic() + self.health_interval
        while True:
            with self._cond:
                if self._closed.is_set():
                    return
                now = time.monotonic()
                wake = [next_check]
                for m in list(self._models.values()):
                    if m.state == LOADED and self.idle_ttl is not None and m.in_flight == 0:
                        if now - m.last_used >= self.idle_ttl:
                            log.info("unloading %s: idle for %.0f s", m.name, now - m.last_used)
                            self._unload_locked(m, "unloads")
                        else:
                            wake.append(m.last_used + self.idle_ttl)
                    elif m.state == FAILED:
                        wake.append(m.retry_at)
                restarts = [m for m in self._models.values() if m.state == FAILED and m.retry_at <= now]
                for m in restarts:
                    m.state = LOADING
                if not restarts and not self._to_close and now < next_check:
                    self._cond.wait(max(min(wake) - now, 0.001))
                    continue
            self._close_unloaded()
            for m in restarts:  # each on a thread of its own: a slow restart holds up no other model
                thread = threading.Thread(target=self._restart, args=(m,), name=f"llamahost-restart-{m.name}")
                self._restarts.add(thread)
                thread.start()
            if time.monotonic() >= next_check:
                self._check_health()
                next_check = time.monotonic() + self.health_interval

    def _restart(self, m: _Model) -> None:
        try:
            self._load(m, restart=True)
        except Exception:  # noqa: BLE001 - logged and scheduled again by _load
            pass
        finally:
            self._restarts.discard(threading.current_thread())

    def _probe(self, backend: Client) -> str | None:
        """What is wrong with a loaded model's server, or None."""
        if not backend.running:
            return "its server stopped"
        try:
            status = health_status(backend.url, self.health_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is the finding
            return f"/health did not answer in {self.health_timeout:g} s ({type(exc).__name__})"
        return None if status == 200 else f"/health answered {status}"

    def _check_health(self) -> None:
        """Every loaded model's server probed at once: one that hangs delays none of the others."""
        with self._cond:
            loaded = [(m, m.backend) for m in self._models.values() if m.state == LOADED]
        problems: dict[int, str | None] = {}
        probes = [threading.Thread(target=lambda i=i, b=b: problems.__setitem__(i, self._probe(b)),
                                   name="llamahost-health") for i, (_, b) in enumerate(loaded)]
        for probe in probes:
            probe.start()
        for probe in probes:
            probe.join()
        for i, (m, backend) in enumerate(loaded):
            problem = problems.get(i)
            with self._cond:
                if m.backend is not backend or self._closed.is_set():
                    continue
                if problem is None:
                    m.health_misses = 0
                    continue
                m.health_misses += 1
                # one slow answer may be load; a dead server or two misses in a row is a failure
                if backend.running and m.health_misses < 2:
                    log.warning("%s: %s", m.name, problem)
                    continue
                self._fail(m, problem)
            if m.isolated:
                backend.kill()
            backend.close()

    def _stats(self, m: _Model) -> dict:
        backend = m.backend
        return dict(m.counts, model=m.path, state=m.state, url=backend.url if backend else None,
                    pid=(backend.pid if m.isolated else os.getpid()) if backend else None,
                    memory_bytes=m.needs if m.state in (LOADING, LOADED) else 0, handles=m.refs,
                    memory_by_device={d.name: d.worst_case for d in m.plan.devices}
                    if m.plan is not None and m.state in (LOADING, LOADED) else {},
                    in_flight=m.in_flight, waiting=m.waiting)


class Handle(Client):
    """A model from a Pool: the calls of ``Server``, sent to the pool's shared server for it.

    The server loads on the first call (concurrent calls wait for it), and again after
    it was unloaded or restarted. ``close()`` (or leaving a ``with`` block) gives the handle
    back; the server itself stays in the pool until it is idle or evicted.
    """

    def __init__(self, pool: Pool, model: _Model):
        self.pool = pool
        self._model = model
        self._closed = False

    @property
    def args(self) -> list[str]:
        """llama-server's command line of the model's server."""
        return list(self._model.args)

    @property
    def key(self) -> tuple:
        """What the pool knows this model and its parameters by: the same for every handle of them."""
        return self._model.key

    @property
    def url(self) -> str:
        """The model's server over HTTP (loaded first if need be); the same for every handle."""
        return self._with_backend(lambda b: b.url)

    @property
    def pid(self) -> int:
        """The process serving the model: its worker with process isolation, else this one."""
        return self._with_backend(lambda b: b.pid) if self._model.isolated else os.getpid()

    @property
    def state(self) -> str:
        """``"unloaded"``, ``"loading"``, ``"loaded"`` or ``"failed"`` (restarting)."""
        return self._model.state

    def stats(self) -> dict:
        with self.pool._cond:
            return self.pool._stats(self._model)

    def load(self) -> "Handle":
        """Load now rather than at the first call."""
        self._with_backend(lambda b: None)
        return self

    def unload(self) -> None:
        """Unload now (after the requests in flight); the next call loads again."""
        self.pool._unload(self._model)

    def close(self) -> None:
        """Give this handle back. The pool forgets the model once no handle is left and it is unloaded."""
        pool, m = self.pool, self._model
        with pool._cond:
            if self._closed:
                return
            self._closed = True
            m.refs -= 1
            if m.refs == 0 and m.state == UNLOADED:
                pool._models.pop(m.key, None)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __repr__(self) -> str:
        return f"<llamahost.Handle {self._model.path!r} {self._model.state}>"

    def _peek(self) -> Client | None:
        """The model's server if it is loaded, without counting as a use (keeps no model alive)."""
        return self._model.backend if self._model.state == LOADED else None

    def _acquire(self, request: bool = True) -> Client:
        if self._closed:
            raise ServerClosedError("this handle is closed")
        return self.pool._acquire(self._model, request=request)

    def _with_backend(self, use: Any) -> Any:
        backend = self._acquire(request=False)
        try:
            return use(backend)
        finally:
            self.pool._release(self._model)

    def _send(self, method: str, path: str, body: bytes) -> tuple[Response, Chunks | None]:
        pool, m = self.pool, self._model
        backend = self._acquire()
        try:
            response, chunks = backend._send(method, path, body)
        except ServerClosedError as exc:
            pool._release(m)
            return _unavailable(m, pool._lost(m, backend, exc)), None
        except BaseException:
            pool._release(m)
            raise
        if chunks is None:
            pool._release(m)
            return response, None
        return response, Chunks(self._until_lost(chunks, backend), partial(pool._release, m), chunks.cancel)

    def _until_lost(self, chunks: Chunks, backend: Client) -> Iterator[bytes]:
        """The stream's chunks; if its server goes away mid-stream, a last event with the 503 error."""
        with closing(chunks):
            try:
                yield from chunks
            except ServerClosedError as exc:
                error = _unavailable(self._model, self.pool._lost(self._model, backend, exc))
                yield b"data: " + error.body + b"\n\n"


def _unavailable(m: _Model, reason: str) -> Response:
    error = {"error": {"code": 503, "type": "unavailable_error", "message": f"model {m.name} is unavailable: {reason}"}}
    return Response(503, "application/json; charset=utf-8", {}, json.dumps(error).encode())


def _bounded_prompt_cache(params: dict[str, Any]) -> dict[str, Any]:
    """A pooled server's prompt cache holds one context of prompts (llama-server's ``--cache-ram
    -1``: no size limit, n_ctx tokens) unless its parameters or environment set one: at llama-server's
    default of 8 GiB each, a budget would hold only a model or two."""
    if "cache_ram" in params or os.environ.get(config.ENV_PREFIX + "CACHE_RAM") or os.environ.get("LLAMA_ARG_CACHE_RAM"):
        return params
    return dict(params, cache_ram=-1)


def _plan(path: str, args: list[str]) -> Estimate:
    """What a server with this command line holds on each device: the engine's dry run."""
    try:
        data = engine_dry_run(args)
    except RuntimeError as exc:
        raise ModelLoadError(path, str(exc)) from None
    plans.remember(plans.key(args), data.get("fitted"))  # the load then needs no fitting of its own
    return from_engine(path, data)


_open_pools: set[Pool] = set()


@atexit.register
def _close_open_pools() -> None:
    for pool in list(_open_pools):
        pool.close()
