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
import socket
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs

from ..chat.messages import send_normalized
from ..core.security import key_matches, warn_if_exposed
from ..core.transport import Chunks, Response
from ..errors import LlamahostError
from .metrics import prometheus
from .pool import Handle, Pool

log = logging.getLogger("llamahost")

PUBLIC_PATHS = ("/health", "/v1/health")  # as llama-server: no API key needed
MAX_BODY = 100 << 20  # bytes a request body may hold (a few large images, base64-encoded)


def _error(status: int, kind: str, message: str) -> Response:
    body = json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode()
    return Response(status, "application/json; charset=utf-8", {}, body)


def _json(data: object) -> Response:
    return Response(200, "application/json; charset=utf-8", {}, json.dumps(data).encode())


class Router:
    """Serve ``models`` (name -> Handle of ``pool``) on ``http://host:port``; call close()."""

    def __init__(self, pool: Pool, models: Mapping[str, Handle], *, host: str = "127.0.0.1", port: int = 8080,
                 api_key: str | None = None, max_body: int = MAX_BODY):
        self.pool = pool
        self.models = dict(models)
        self.max_body = max_body
        self.api_keys = [key for key in api_key.split(",") if key] if api_key else []
        self.created = int(time.time())
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

    def close(self) -> None:
        """Stop listening and end the open connections (streams in flight are cancelled)."""
        self._http.shutdown()
        self._http.close_connections()
        self._http.server_close()  # joins the connection threads
        self._thread.join()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refusal(self, target: str, headers: Mapping[str, str]) -> Response | None:
        """The answer to a request refused before its body is read: a missing API key, or a
        Content-Length that is not a size this router takes. None: read the body, then route()."""
        path = target.partition("?")[0]
        if path in PUBLIC_PATHS:
            return None
        if self.api_keys and not self._authorized(headers):
            return _error(401, "authentication_error", "Invalid API Key")
        length = headers.get("Content-Length")
        if length is None and "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            return _error(411, "invalid_request_error", "a request body needs a Content-Length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return _error(400, "invalid_request_error", f"Content-Length {length[:40]!r} is not a size in bytes")
        if length is not None and int(length) > self.max_body:
            return _error(413, "invalid_request_error",
                          f"the request body of {int(length)} bytes is larger than {self.max_body} bytes")
        return None

    def route(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[Response, Chunks | None]:
        """The answer to one request (that ``refusal`` let through), as a model's server or the
        router itself gives it."""
        path, _, query = target.partition("?")
        if path in PUBLIC_PATHS:
            return _json({"status": "ok"}), None
        if method == "GET" and path in ("/v1/models", "/models"):
            return self._list(), None
        if method == "GET" and path == "/metrics":
            return Response(200, "text/plain; version=0.0.4", {}, prometheus(self.pool, self.models).encode()), None
        name = parse_qs(query).get("model", [None])[0]
        if method == "POST" and body:
            try:
                fields = json.loads(body)
            except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
                return _error(400, "invalid_request_error", f"the body is not JSON: {exc}"), None
            if isinstance(fields, dict) and fields.get("model") is not None:
                name = fields["model"]
        if not name:
            return _error(400, "invalid_request_error", "model name is missing from the request"), None
        handle = self.models.get(name) if isinstance(name, str) else None
        if handle is None:
            return _error(404, "not_found_error", f"model '{name}' not found; see /v1/models"), None
        try:
            return send_normalized(handle, method, target, body)  # a chat its template refuses goes again, normalised
        except LlamahostError as exc:  # the model could not be loaded, or the pool is closing
            return _error(503, "unavailable_error", f"model '{name}' is unavailable: {exc}"), None

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        key = headers.get("Authorization") or headers.get("X-Api-Key") or ""
        return key_matches(key.removeprefix("Bearer "), self.api_keys)

    def _list(self) -> Response:
        data = [{"id": name, "object": "model", "owned_by": "llamahost", "created": self.created,
                 "status": {"value": handle.state}} for name, handle in self.models.items()]
        return _json({"object": "list", "data": data})


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

    def _answer(self, method: str) -> None:
        router = self.server.router
        refused = router.refusal(self.path, self.headers)
        if refused is not None:
            self.close_connection = True  # the body, unread, must not be taken for the next request
            self._send(refused, None)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._send(*router.route(method, self.path, self.headers, body))

    def _send(self, response: Response, chunks: Chunks | None) -> None:
        self.send_response(response.status)
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
