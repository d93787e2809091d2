"""``Server``: llama.cpp's own server running inside this process.

It listens on a loopback port for any HTTP client, and the same route handlers are
called directly from Python (no socket, no JSON over HTTP) by the methods of ``Client``.
"""

from __future__ import annotations

import json
import os
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..core import _native, cmdline, config, heap, rpc, security
from ..core.transport import Chunks, Response
from ..errors import ModelLoadError, ServerClosedError
from ..gguf.info import read_model
from ..models.resolve import resolve
from ..planning.estimate import fitted_context
from . import plans
from .client import Client

if TYPE_CHECKING:
    from ..planning.estimate import DeviceEstimate


class Server(Client):
    """llama.cpp's server for one model, in this process.

    ``Server("model.gguf", n_ctx=4096, parallel=4)``; every keyword is a parameter from
    the README's table or any llama-server option spelled with underscores
    (``cache_ram=2048`` is ``--cache-ram 2048``). Use as a context manager, or call close().
    """

    def __init__(self, model: str | os.PathLike, *, rpc_in_process: bool = False, **params: Any):
        """``model``: a GGUF path, a model folder, a library name or a Hugging Face reference
        (see ``llamahost.resolve``). ``rpc=["host:port", ...]`` uses RPC workers' devices, only
        with ``rpc_in_process=True`` (see ``from_args``)."""
        args = command_line(os.fspath(model), params)
        self._start(args, rpc_in_process=rpc_in_process)

    @classmethod
    def from_args(cls, args: Sequence[str], *, cancel: threading.Event | None = None,
                  rpc_in_process: bool = False) -> "Server":
        """A server from llama-server's own command-line arguments, verbatim. Setting ``cancel``
        while the model loads stops the load (ServerClosedError).

        RPC workers (``--rpc``): llama.cpp ends the process it runs in when a worker it uses
        stops answering, and keeps their devices registered for the rest of that process. So a
        server using them runs here only with ``rpc_in_process=True``; ``lh.Pool().get(model,
        rpc=[...])`` and ``llamahost serve --rpc`` run it in a worker process of its own instead,
        where a lost worker fails that model's requests and nothing else. Each worker is checked
        first either way (RPCWorkerError: not reachable, or another protocol version)."""
        args = [str(a) for a in args]
        self = cls.__new__(cls)
        self._start(args, cancel, rpc_in_process=rpc_in_process)
        return self

    def _start(self, args: list[str], cancel: threading.Event | None = None, *, rpc_in_process: bool = False) -> None:
        self._closed = True  # until the load succeeds
        settings = cmdline.read(args)  # upstream's reading of the flags and LLAMA_ARG_* variables
        if settings["rpc"]:
            if not rpc_in_process:
                raise ValueError("a server using RPC workers (rpc=, --rpc) ends this process if a worker stops "
                                 "answering (llama.cpp aborts): serve it with lh.Pool().get(model, rpc=[...]) or "
                                 "`llamahost serve --rpc`, which run it in a worker process, or pass "
                                 "rpc_in_process=True to accept that")
            rpc.check(settings["rpc"])
        self.model_path = path = settings["model"]
        if path:
            read_model(path)  # every file checked before the engine opens one
        self.args = args
        self.host = settings["hosts"][0] if settings["hosts"] else "127.0.0.1"
        self._lock = threading.Lock()
        engine_args, plan_key = plans.planned(args)
        self._engine = _native.Engine(engine_args)
        self._closed = False
        security.warn_if_exposed(settings["hosts"], len(settings["api_keys"]), "llama.cpp's server")
        try:
            with heap.loading():
                _load(self._engine, cancel)
        except RuntimeError as exc:
            self._closed = True
            if cancel is not None and cancel.is_set():
                raise ServerClosedError(f"{path}: closed while the model was loading") from None
            raise ModelLoadError(path, str(exc)) from None
        except BaseException:  # KeyboardInterrupt: the load was stopped
            self._closed = True
            raise
        self.port = self._engine.port
        fitted = self._engine.fitted()
        plans.remember(plan_key, json.loads(fitted) if fitted else None)
        #: how the load met upstream's fitting: "ran", "remembered" (a plan's options given), or
        #: "not needed" (the command line left it nothing to choose)
        self.fitting = "ran" if fitted else "remembered" if len(engine_args) > len(args) else "not needed"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return not self._closed and self._engine.running

    def close(self) -> None:
        """Stop serving and free the model. Open streams end with ServerClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._engine.stop()
        heap.return_freed()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_engine", None) is not None and not getattr(self, "_closed", True):
            self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "closed"
        return f"<llamahost.Server {self.model_path!r} {state} at {self.url if state == 'running' else '-'}>"

    # -- the transport: the route handlers themselves ------------------------------------------

    def _send(self, method: str, path: str, body: bytes) -> tuple[Response, Chunks | None]:
        if self._closed:
            raise ServerClosedError("this server is closed")
        try:
            status, content_type, headers, data, stream_id = self._engine.call(method, path, body)
        except RuntimeError as exc:
            raise ServerClosedError(str(exc)) from None
        except IndexError:  # the body llama-server's HTTP layer sends for an unknown path
            error = {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}
            return Response(404, "application/json; charset=utf-8", {}, json.dumps(error).encode()), None
        if self._closed:  # close() cut the answer short
            raise ServerClosedError("the server was closed while this request was answered")
        response = Response(status, content_type, headers, data or b"")
        if not stream_id:
            return response, None
        stop = partial(self._engine.close_stream, stream_id)  # thread-safe; cancels the generation
        return response, Chunks(_engine_chunks(self._engine, stream_id), stop, stop)

    # -- what only the engine knows ------------------------------------------------------------

    def memory_breakdown(self) -> "tuple[DeviceEstimate, ...]":
        """What the loaded model and context really hold per device (host last, as "CPU"):
        weights, kv_cache and compute bytes, the same shape as ``estimate().devices``."""
        from ..planning.estimate import from_engine

        data = json.loads(self._engine.memory_breakdown())
        return from_engine(self.model_path, data).devices

    def routes(self) -> list[str]:
        """The routes this server answers (the same with and without HTTP)."""
        return self._engine.routes()


def command_line(model: str, params: dict[str, Any]) -> list[str]:
    """llama-server's command line for ``Server(model, **params)``: the reference resolved (with
    a projector found beside the model), a clear error first for a missing, foreign or damaged
    file, and ``n_ctx=0`` ("as large as fits") made concrete."""
    resolved = resolve(model)
    path, params = str(resolved.path), resolved.server_params(params)
    read_model(path)
    fitted = fitted_context(path, params)
    if fitted is not None:
        params = dict(params, n_ctx=fitted)
    return config.server_args(path, params)


def _load(engine: "_native.Engine", cancel: threading.Event | None) -> None:
    """engine.start() (the model loads, the GIL released) on a thread of its own, so that this
    one can stop it: on KeyboardInterrupt, or once ``cancel`` is set."""
    failed: list[BaseException] = []

    def start() -> None:
        try:
            engine.start()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(exc)

    loader = threading.Thread(target=start, name="llamahost-load", daemon=True)
    loader.start()
    try:
        while loader.is_alive():
            loader.join(None if cancel is None else 0.02)
            if cancel is not None and cancel.is_set():
                engine.stop()
    except BaseException:
        engine.stop()  # the load ends at its next progress callback
        loader.join()
        raise
    if failed:
        raise failed[0]
    if cancel is not None and cancel.is_set():  # set as the load finished: the caller must not get a stopped server
        engine.stop()
        raise RuntimeError("the load was cancelled")


def _engine_chunks(engine: "_native.Engine", stream_id: int) -> Iterator[bytes]:
    more = True
    while more:
        try:
            chunk, more = engine.next_chunk(stream_id)
        except RuntimeError as exc:
            raise ServerClosedError(str(exc)) from None
        if chunk:
            yield chunk
