"""One HTTP endpoint for many models: the OpenAI ``model`` field picks the model.

``Router(pool, {"name": handle, ...})`` listens on one port. A POST goes to the model
its JSON body names (``"model": "name"``), a GET to the one its ``?model=name`` query
names; the request reaches that model's handle unchanged, and the answer (a stream too)
comes back unchanged. With thread isolation the handle calls the route handlers in this
process, so there is no second HTTP hop; with process isolation it forwards over
kept-alive loopback connections. The router itself answers /health, /v1/models (the
models served, loaded or not) and /metrics (Prometheus: per model and pool-wide).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from ..chat.messages import send_normalized
from ..core import _native
from ..core.cmdline import take_option
from ..core.devices import system_info
from ..core.security import key_matches, warn_if_exposed
from ..core.transport import Chunks, Response
from ..errors import LlamahostError
from ..models.library import Library, LibraryModel
from ..models.resolve import names_the_hub
from . import presets
from .events import Events
from .manage import PAGES, Call, Manage
from .metrics import prometheus
from .pool import Handle, Pool
from .pulls import Pulls

log = logging.getLogger("llamahost")

PUBLIC_PATHS = ("/health", "/v1/health")  # as llama-server: no API key needed
MAX_BODY = 100 << 20  # bytes a request body may hold (a few large images, base64-encoded)
MANAGEMENT = {("POST", "/models/load"), ("POST", "/models/unload"), ("POST", "/models"), ("DELETE", "/models")}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def _error(status: int, kind: str, message: str) -> Response:
    body = json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode()
    return Response(status, "application/json; charset=utf-8", {}, body)


def _json(data: object) -> Response:
    return Response(200, "application/json; charset=utf-8", {}, json.dumps(data).encode())


def loopback_origin(origin: str) -> bool:
    """Whether a page's origin is served from this machine (any port): what may call a server by
    default, as upstream allows when its tools are on and as Ollama does."""
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        return False
    return host in LOOPBACK_HOSTS


class Router:
    """Serve ``models`` (name -> Handle of ``pool``) on ``http://host:port``; call close().

    Speaks upstream's router API too (the web UI's model picker): ``/props`` with the router's
    role, ``/v1/models`` with each model's status, ``POST /models/load`` and ``/models/unload``,
    ``GET /models/sse`` (the models' events), ``POST /models`` (a pull from the Hub into the
    library; the model is added, with ``model_args``) and ``DELETE /models`` (cancels a pull, or
    removes a pulled model). ``cors_origins``: the origins besides this machine's that may call
    it (``["*"]``: any). ``ui``: serve llama.cpp's web UI at ``/``.
    """

    def __init__(self, pool: Pool, models: Mapping[str, Handle], *, host: str = "127.0.0.1", port: int = 8080,
                 api_key: str | None = None, max_body: int = MAX_BODY, cors_origins: Sequence[str] = (),
                 ui: bool = True, model_args: Sequence[str] = (), presets_path: str | os.PathLike | None = None):
        self.pool = pool
        self.models = dict(models)
        self._sources = dict.fromkeys(self.models, "preset")  # upstream's word for models named by the caller
        self.max_body = max_body
        self.api_keys = [key for key in api_key.split(",") if key] if api_key else []
        self.cors_origins = list(cors_origins)
        self.ui = ui
        self.model_args = list(model_args)
        self.presets_path = Path(presets_path) if presets_path else None
        self.created = int(time.time())
        self.events = Events()
        self.pulls = Pulls(self.events, self._pulled)
        self.manage = Manage(self)
        self._lock = threading.Lock()  # the models' names (downloads add some while requests run)
        pool.watch(self._state_changed)
        warn_if_exposed([host], len(self.api_keys), "the llamahost router")
        self._http = _HTTPServer((host, port), _RequestHandler)
        self._http.router = self
        self.host, self.port = host, self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="llamahost-router", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def add(self, name: str, model: str, own_args: Sequence[str] = (), *, source: str = "preset",
            replace: bool = False) -> Handle:
        """Serve one more model, as ``name``: with ``model_args``, then its saved preset's options
        (``presets_path``), then ``own_args``. ``replace``: ``own_args`` in place of the saved
        preset, and a model served as ``name`` from this same file is served so from now on (its
        server unloaded)."""
        saved = presets.read(self.presets_path).get(name, []) if self.presets_path and not replace else []
        _, saved = take_option(saved, "--model")
        handle = self.pool.get(model, args=[*self.model_args, *saved, *own_args, "--alias", name])
        with self._lock:
            old = self.models.get(name)
            if old is not None and not (replace and _same_file(take_option(old.args, "--model")[0], model)):
                handle.close()
                raise ValueError(f"a model named {name!r} is served already")
            self.models[name] = handle
            self._sources[name] = self._sources.get(name, source)
        if old is not None:
            old.unload()
            old.close()
        self.events.publish(name, "status_change", {"status": handle.state})
        return handle

    def model_file(self, name: str) -> str | None:
        """The model file served as ``name``, if one is."""
        handle = self._handle(name)
        return take_option(handle.args, "--model")[0] if handle is not None else None

    def served(self) -> dict[str, Handle]:
        """The models served now, by name."""
        with self._lock:
            return dict(self.models)

    def sources(self) -> dict[str, str]:
        """Where each served model came from: "preset" (named by the caller), "models_dir", "cache" (pulled)."""
        with self._lock:
            return dict(self._sources)

    def save_preset(self, name: str, args: Sequence[str]) -> None:
        if self.presets_path is not None:
            presets.save(self.presets_path, name, args)

    def load_soon(self, name: str, handle: Handle) -> None:
        """Load on a thread of its own: the caller hears how it went through the events."""
        threading.Thread(target=_quietly, args=(handle.load,), name=f"llamahost-load-{name}", daemon=True).start()

    def close(self) -> None:
        """Stop listening and end the open connections (streams in flight are cancelled)."""
        self.pulls.close()
        self.events.close()
        self._http.shutdown()
        self._http.close_connections()
        self._http.server_close()  # joins the connection threads
        self._thread.join()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks before a body is read ------------------------------------------------------------

    def refusal(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        """The answer to a request refused before its body is read: a missing API key, a page of
        another origin asking to manage the models, or a Content-Length that is not a size this
        router takes. None: read the body, then route()."""
        path = target.partition("?")[0]
        if path in PUBLIC_PATHS:
            return None
        if self.api_keys and not self._authorized(headers) and not self._page(method, path):
            return _error(401, "authentication_error", "Invalid API Key")
        origin = headers.get("Origin")
        manages = (method, path) in MANAGEMENT or (method != "GET" and path.startswith("/api/"))
        if manages and origin and not self.allowed_origin(origin):
            return _error(403, "permission_error", f"a page of {origin[:100]} may not manage this router's models")
        length = headers.get("Content-Length")
        if length is None and "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            return _error(411, "invalid_request_error", "a request body needs a Content-Length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return _error(400, "invalid_request_error", f"Content-Length {length[:40]!r} is not a size in bytes")
        if length is not None and int(length) > self.max_body:
            return _error(413, "invalid_request_error",
                          f"the request body of {int(length)} bytes is larger than {self.max_body} bytes")
        return None

    def _page(self, method: str, path: str) -> bool:
        """Whether this is one of the pages' own files: public, as llama-server's UI files are
        (the pages ask for the key, and send it with their calls)."""
        if method != "GET":
            return False
        return path in PAGES or (self.ui and _native.web_ui_asset(path.lstrip("/"), False, "")[0] != 404)

    def allowed_origin(self, origin: str) -> bool:
        return loopback_origin(origin) or "*" in self.cors_origins or origin in self.cors_origins

    # -- routing -----------------------------------------------------------------------------------

    def route(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[Response, Chunks | None]:
        """The answer to one request (that ``refusal`` let through), as a model's server or the
        router itself gives it."""
        path, _, query = target.partition("?")
        if path in PUBLIC_PATHS:
            return _json({"status": "ok"}), None
        if method == "GET" and path == "/models/sse":
            return Response(200, "text/event-stream", {"Cache-Control": "no-cache"}), Chunks(self.events.stream())
        fields: Any = None
        if method in ("POST", "PUT", "DELETE") and body:
            try:
                fields = json.loads(body)
            except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
                return _error(400, "invalid_request_error", f"the body is not JSON: {exc}"), None
        call = Call({key: values[0] for key, values in parse_qs(query).items()}, fields, headers)
        name = call.model
        own = self._own_routes().get((method, path))
        if own is not None and not (method == "GET" and path == "/props" and name):
            return own(call), None
        if path.startswith(("/api/", "/dashboard")):
            return self.manage.route(method, path, call)
        if not name:
            if method == "GET" and self.ui:  # llama.cpp's web UI, as a model's server serves it
                answer = self._ui_asset(path, headers)
                if answer.status != 404:
                    return answer, None
            with self._lock:
                only = list(self.models) if len(self.models) == 1 else []
            if not only:
                return _error(400, "invalid_request_error", "model name is missing from the request"), None
            name = only[0]  # one model served: requests need not name it
        handle = self._handle(name)
        if handle is None:
            return _error(404, "not_found_error", f"model '{name}' not found; see /v1/models"), None
        try:
            return send_normalized(handle, method, target, body)  # a chat its template refuses goes again, normalised
        except LlamahostError as exc:  # the model could not be loaded, or the pool is closing
            return _error(503, "unavailable_error", f"model '{name}' is unavailable: {exc}"), None

    def _own_routes(self) -> dict[tuple[str, str], Any]:
        disabled = _feature_disabled  # as upstream answers what it was started without
        return {("GET", "/props"): self._props, ("GET", "/v1/models"): self._list, ("GET", "/models"): self._list,
                ("GET", "/metrics"): self._metrics, ("POST", "/models/load"): self.load,
                ("POST", "/models/unload"): self.unload, ("POST", "/models"): self.pull,
                ("DELETE", "/models"): self.delete, ("GET", "/tools"): disabled, ("POST", "/tools"): disabled,
                ("GET", "/cors-proxy"): disabled, ("POST", "/cors-proxy"): disabled,
                # streams resumed after a reload: the router keeps no conversation's stream (upstream's
                # answers when none is known)
                ("POST", "/v1/streams/lookup"): lambda call: _json([]),
                ("GET", "/v1/stream"): lambda call: _error(404, "not_found_error", "Stream not found or expired"),
                ("DELETE", "/v1/stream"): lambda call: _error(404, "not_found_error", "Stream not found or expired")}

    def _handle(self, name: Any) -> Handle | None:
        with self._lock:
            return self.models.get(name) if isinstance(name, str) else None

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        key = headers.get("Authorization") or headers.get("X-Api-Key") or ""
        return key_matches(key.removeprefix("Bearer "), self.api_keys)

    def _ui_asset(self, path: str, headers: Mapping[str, str]) -> Response:
        status, content_type, extra, data = _native.web_ui_asset(
            path.lstrip("/"), "gzip" in (headers.get("Accept-Encoding") or ""), headers.get("If-None-Match") or "")
        return Response(status, content_type, extra, data)

    # -- upstream's router API (server-models.cpp) ------------------------------------------------

    def _props(self, call: Call) -> Response:
        info = system_info()
        return _json({"role": "router", "max_instances": 0, "models_autoload": True, "model_alias": "llama-server",
                      "model_path": "none", "default_generation_settings": {"params": {}, "n_ctx": 0},
                      "ui_settings": {}, "build_info": f"{info['llama_cpp_build']}-{info['llama_cpp_commit']}",
                      "cors_proxy_enabled": False})

    def _list(self, call: Call) -> Response:
        with self._lock:
            served = [(n, h, self._sources[n]) for n, h in self.models.items()]
        data = []
        for model, handle, source in served:
            args = handle.args
            status = {"value": handle.state, "args": args, "preset": presets.to_ini(model, args)}
            if handle.state == "failed":
                status["failed"] = True
            entry = {"id": model, "aliases": [], "tags": [], "object": "model", "owned_by": "llamacpp",
                     "created": self.created, "status": status,
                     "architecture": {"input_modalities": ["text", "image"] if "--mmproj" in args else ["text"],
                                      "output_modalities": ["text"]},
                     "source": source, "can_remove": source == "cache"}
            server = handle._peek()
            if server is not None:  # as upstream merges what the model's own server says of it
                try:
                    for key, value in server.models()["data"][0].items():
                        entry.setdefault(key, value)
                except (LlamahostError, KeyError, IndexError):
                    pass
            data.append(entry)
        return _json({"data": data, "object": "list"})

    def _metrics(self, call: Call) -> Response:
        with self._lock:
            models = dict(self.models)
        return Response(200, "text/plain; version=0.0.4", {}, prometheus(self.pool, models).encode())

    def load(self, call: Call) -> Response:
        name = call.model
        handle = self._handle(name)
        if handle is None:
            return _error(404, "not_found_error", "model is not found")
        if handle.state in ("loading", "loaded"):
            return _error(400, "invalid_request_error", "model is already running")
        self.load_soon(name, handle)
        return _json({"success": True})

    def unload(self, call: Call) -> Response:
        name = call.model
        handle = self._handle(name)
        if handle is None:
            return _error(400, "invalid_request_error", "model is not found")
        if handle.state not in ("loading", "loaded"):
            return _error(400, "invalid_request_error", "model is not running")
        threading.Thread(target=_quietly, args=(handle.unload,), name=f"llamahost-unload-{name}", daemon=True).start()
        return _json({"success": True})

    def pull(self, call: Call) -> Response:
        name = call.model
        if not isinstance(name, str) or not name:
            return _error(400, "invalid_request_error", "model must be a non-empty string")
        if not names_the_hub(name):
            return _error(400, "invalid_request_error", f"{name!r} is no Hugging Face reference (org/repo[:TAG])")
        if self._handle(name) is not None:
            return _error(400, "invalid_request_error", f"model '{name}' already exists")
        try:
            self.pulls.start(name)
        except ValueError as exc:
            return _error(400, "invalid_request_error", str(exc))
        self.events.publish(name, "status_change", {"status": "downloading"})
        return _json({"success": True})

    def delete(self, call: Call) -> Response:
        name = call.model
        if not isinstance(name, str) or not name:
            return _error(400, "invalid_request_error", "model must be a non-empty string")
        if self.pulls.cancel(name):
            return _json({"success": True})
        with self._lock:
            if self._sources.get(name) != "cache":
                return _error(404, "not_found_error", f"model '{name}' is no pulled model of this router")
            handle = self.models.pop(name)
            del self._sources[name]
        handle.unload()
        handle.close()
        Library().remove(Library().one(name))
        self.events.publish(name, "model_remove")
        return _json({"success": True})

    def _pulled(self, model: LibraryModel) -> None:
        try:
            self.add(model.name, str(model.path), ["--mmproj", str(model.mmproj)] if model.mmproj else [],
                     source="cache")
        except (ValueError, LlamahostError) as exc:
            log.warning("%s was pulled, but cannot be served: %s", model.name, exc)

    def _state_changed(self, key: tuple, state: str) -> None:
        with self._lock:
            names = [name for name, handle in self.models.items() if handle.key == key]
        for name in names:
            self.events.publish(name, "status_change", {"status": state})


def _feature_disabled(call: Call) -> Response:
    body = json.dumps({"error": {"message": "this feature is disabled", "type": "feature_disabled"}}).encode()
    return Response(403, "application/json; charset=utf-8", {}, body)


def _same_file(a: str | None, b: str) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _quietly(action: Any) -> None:
    """A load or unload the router started for a client: its outcome reaches the client as events."""
    try:
        action()
    except LlamahostError as exc:
        log.warning("%s", exc)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them
    router: Router

    def __init__(self, *args: object):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args)

    def process_request(self, request: socket.socket, client_address: object) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that left is no error of ours
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake every connection thread: those waiting for a next request see the end of it."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections
    disable_nagle_algorithm = True  # a small write goes out now, not after the peer's delayed ACK
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # the models' servers log; a line per request here would be noise

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_OPTIONS(self) -> None:
        """A browser's preflight: answered without a key, as upstream does (browsers send none)."""
        self._send(Response(204, "text/plain", {"Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                                                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                                                "Access-Control-Allow-Credentials": "true"}), None)

    def _answer(self, method: str) -> None:
        router = self.server.router
        refused = router.refusal(method, self.path, self.headers)
        if refused is not None:
            self.close_connection = True  # the body, unread, must not be taken for the next request
            self._send(refused, None)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._send(*router.route(method, self.path, self.headers, body))

    def _send(self, response: Response, chunks: Chunks | None) -> None:
        self.send_response(response.status)
        origin = self.headers.get("Origin")
        if origin and self.server.router.allowed_origin(origin):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if chunks is None:
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            return
        with closing(chunks):  # a client that leaves mid-stream cancels the generation
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")


def models_in_dir(directory: str | Path) -> dict[str, tuple[Path, list[str]]]:
    """The models of a folder, read as llama-server's ``--models-dir`` reads it: name ->
    (GGUF, further flags). Each GGUF file is a model named by its file name without
    ``.gguf`` (projectors and later parts of split models skipped); each subfolder is a model
    named by the folder, its file chosen as ``resolve()`` chooses one in a folder (the best
    quantization that fits), with its projector as ``--mmproj``. A subfolder holding several
    models is left out, with a warning naming them."""
    from ..errors import AmbiguousModelError, ModelNotFoundError
    from ..models.resolve import resolve

    folder = Path(directory)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory")
    found: dict[str, tuple[Path, list[str]]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            try:
                model = resolve(entry)
            except ModelNotFoundError:
                continue  # no GGUF in it
            except AmbiguousModelError as exc:
                log.warning("--models-dir: %s left out: %s", entry, exc)
                continue
            found[entry.name] = (model.path, ["--mmproj", str(model.mmproj)] if model.mmproj else [])
        elif entry.suffix.lower() == ".gguf" and "mmproj" not in entry.name.lower() and not _later_part(entry):
            found[entry.stem] = (entry, [])
    return found


def _later_part(path: Path) -> bool:
    """A split GGUF's second, third, ... part (loaded through its first)."""
    from ..gguf.info import SPLIT_NAME

    split = SPLIT_NAME.match(path.name)
    return bool(split) and int(split["index"]) > 1
