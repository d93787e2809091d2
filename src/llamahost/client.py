"""The OpenAI-shaped calls (chat, complete, embed, tokenize, ...) over any transport.

``Client`` needs one thing from a subclass, ``_send``: call a route and return its
``Response``, and for a streamed answer the ``Chunks`` of its body. ``Server`` sends to
the in-process route handlers; ``HTTPClient`` sends over HTTP (a worker process of a
pool, or any llama-server); a pool's handle sends to whichever of the two serves its model.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from contextlib import closing
from functools import partial
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, Sequence
from urllib.parse import urlsplit

from .errors import APIError, ServerClosedError
from .messages import CHAT_ROUTES, send_normalized
from .tools import emulated_request, needs_emulation


@dataclass
class Response:
    """What a route answered: status, headers and the raw body."""

    status: int
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Chunks:
    """The body of a streamed answer, chunk by chunk.

    Exhausting it, close(), or garbage collection ends the stream (and ``on_close`` runs
    once), also when it was never read: leaving a stream early cancels its generation.
    ``cancel()`` may be called from any thread, while another one waits for the next chunk:
    it stops the stream at its source, and that wait ends.
    """

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] | None = None,
                 cancel: Callable[[], None] | None = None):
        self._chunks = chunks
        self._on_close = on_close
        self._cancel = cancel
        self._closed = False

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()

    def __iter__(self) -> "Chunks":
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_close is not None:
                self._on_close()

    def __del__(self) -> None:
        self.close()


class Stream:
    """The items of a streamed answer (chunks of a chat or a completion, as dicts): an iterator.
    ``close()`` ends it (the generation is cancelled); ``cancel()`` may be called from any thread,
    while another reads it, and stops it at its source."""

    def __init__(self, items: Iterator[Any], cancel: Callable[[], None]):
        self._items = items
        self.cancel = cancel

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        return next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


def raise_for(response: Response) -> None:
    """APIError with the route's status and error body, unless the response is a success."""
    if response.ok:
        return
    try:
        error = response.json().get("error", response.body.decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        error = response.body.decode("utf-8", "replace")
    raise APIError(response.status, error)


class Client:
    """Every call of a llama.cpp server, given a transport (``_send``)."""

    def _send(self, method: str, path: str, body: bytes) -> tuple[Response, Chunks | None]:
        """Call a route; a streamed answer comes with its body as Chunks (and an empty ``body``)."""
        raise NotImplementedError

    def _call(self, method: str, path: str, body: Any) -> tuple[Response, Chunks | None]:
        if body is None:
            raw = b""
        elif isinstance(body, (bytes, bytearray)):
            raw = bytes(body)
        else:
            raw = json.dumps(body).encode("utf-8")
        if path.partition("?")[0] in CHAT_ROUTES:  # a chat the template refuses goes again, normalised
            return send_normalized(self, method.upper(), path, raw)
        return self._send(method.upper(), path, raw)

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """Call any route as an HTTP client would: a dict body is sent as JSON, bytes as they are.

        A streamed answer is read whole into ``body``; use the stream= methods to iterate.
        """
        response, chunks = self._call(method, path, body)
        if chunks is not None:
            response.body = b"".join(chunks)
        return response

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self.request(method, path, body)
        raise_for(response)
        return response.json()

    def _events(self, path: str, body: dict) -> Stream:
        """POST with stream=True: each server-sent event's JSON."""
        response, chunks = self._call("POST", path, dict(body, stream=True))
        if chunks is None:
            raise_for(response)
            raise APIError(response.status, "expected a stream, got a plain response")
        return Stream(_events_of(chunks), chunks.cancel)

    # -- OpenAI-shaped calls -------------------------------------------------------------------

    def chat(self, messages: list[dict], *, stream: bool = False, **opts: Any) -> Any:
        """/v1/chat/completions: the response dict, or with stream=True an iterator of chunks.

        Messages the model's chat template refuses are sent again normalised (``normalize_messages``);
        tools on a template without tool syntax are emulated (``llamahost.tools``).
        """
        body = dict(opts, messages=messages)
        if needs_emulation(self, body):
            request, emulation = emulated_request(body)
            if stream:
                events = self._events("/v1/chat/completions", request)
                return Stream(emulation.chunks(events), events.cancel)
            return emulation.response(self._json("POST", "/v1/chat/completions", request))
        if stream:
            return self._events("/v1/chat/completions", body)
        return self._json("POST", "/v1/chat/completions", body)

    def complete(self, prompt: str | list, *, stream: bool = False, **opts: Any) -> Any:
        """/v1/completions: the response dict, or with stream=True an iterator of chunks."""
        body = dict(opts, prompt=prompt)
        if stream:
            return self._events("/v1/completions", body)
        return self._json("POST", "/v1/completions", body)

    def achat(self, messages: list[dict], *, stream: bool = False, **opts: Any):
        """Async chat: ``await srv.achat(...)`` or ``async for chunk in srv.achat(..., stream=True)``."""
        if stream:
            return _aiter_in_thread(self.chat(messages, stream=True, **opts))
        return _in_thread(self.chat, messages, **opts)

    def acomplete(self, prompt: str | list, *, stream: bool = False, **opts: Any):
        """Async complete, like achat()."""
        if stream:
            return _aiter_in_thread(self.complete(prompt, stream=True, **opts))
        return _in_thread(self.complete, prompt, **opts)

    def embed(self, texts: str | Sequence[str], **opts: Any):
        """/v1/embeddings as a float32 numpy array of shape (len(texts), dim)."""
        import numpy as np

        if isinstance(texts, str):
            texts = [texts]
        data = self._json("POST", "/v1/embeddings", dict(opts, input=list(texts)))["data"]
        data.sort(key=lambda item: item["index"])
        return np.asarray([item["embedding"] for item in data], dtype=np.float32)

    def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None, **opts: Any) -> list[dict]:
        """/v1/rerank: ``[{"index": i, "relevance_score": s}, ...]``, best first."""
        body = dict(opts, query=query, documents=list(documents))
        if top_n is not None:
            body["top_n"] = top_n
        results = self._json("POST", "/v1/rerank", body)["results"]
        return sorted(results, key=lambda r: r["relevance_score"], reverse=True)

    # -- tokens --------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        body = {"content": text, "add_special": add_special, "parse_special": parse_special}
        return self._json("POST", "/tokenize", body)["tokens"]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._json("POST", "/detokenize", {"tokens": list(tokens)})["content"]

    def count_tokens(self, messages_or_text: str | list[dict], *, tools: list[dict] | None = None) -> int:
        """Exactly the ``usage.prompt_tokens`` the server reports for the same input.

        Messages go through the model's chat template (and tools, if given); a text is
        counted as the completions route would, with the model's BOS token.
        """
        if isinstance(messages_or_text, str):
            return len(self.tokenize(messages_or_text, add_special=True))
        body: dict[str, Any] = {"messages": messages_or_text}
        if tools is not None:
            body["tools"] = tools
        if needs_emulation(self, body):
            body = emulated_request(body)[0]
        return self._json("POST", "/v1/chat/completions/input_tokens", body)["input_tokens"]

    # -- state ---------------------------------------------------------------------------------

    def health(self) -> dict:
        return self._json("GET", "/health")

    def props(self) -> dict:
        return self._json("GET", "/props")

    def models(self) -> dict:
        return self._json("GET", "/v1/models")


# hop-by-hop and framing headers: the transport that forwards a response sets its own
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-type", "date",
                      "server"})


class HTTPClient(Client):
    """The same calls over HTTP to a server at ``url`` (a pool's worker process, or any
    llama-server), on kept-alive connections of the standard library's client (a third of
    httpx's time per request). A connection that fails raises ServerClosedError."""

    def __init__(self, url: str, *, api_key: str | None = None, connect_timeout: float = 10.0):
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connect_timeout = connect_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(*self._address, timeout=self._connect_timeout)
        connection.connect()
        connection.sock.settimeout(None)  # a generation may take long; a server that hangs is a health check's job
        return connection

    def _exchange(self, method: str, path: str, body: bytes) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = dict(self._headers, **({"Content-Type": "application/json"} if body else {}))
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        reused = connection is not None
        connection = connection or self._connect()
        while True:
            try:
                connection.request(method, path, body or None, headers)
                return connection, connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if not reused:
                    raise
                # the server closed the kept-alive connection (llama-server does after 5 s idle) as the
                # request went out: it got no answer at all, so it is sent again on a new connection
                connection, reused = self._connect(), False
            except BaseException:
                connection.close()
                raise

    def _send(self, method: str, path: str, body: bytes) -> tuple[Response, Chunks | None]:
        try:
            connection, answer = self._exchange(method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerClosedError(f"{self.url}: {exc or type(exc).__name__}") from None
        headers = {k: v for k, v in answer.getheaders() if k.lower() not in _FRAMING}
        response = Response(answer.status, answer.getheader("Content-Type", ""), headers)
        if response.content_type.startswith("text/event-stream"):
            # not kept for another request: llama-server closes the connection after a stream
            return response, Chunks(self._read(answer), connection.close, partial(_shut_down, connection))
        try:
            response.body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerClosedError(f"{self.url}: {exc or type(exc).__name__}") from None
        finally:
            self._done(connection, answer)
        return response, None

    def _read(self, answer: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while chunk := answer.read1(65536):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise ServerClosedError(f"{self.url}: {exc or type(exc).__name__}") from None

    def _done(self, connection: http.client.HTTPConnection, answer: http.client.HTTPResponse) -> None:
        """Keep the connection for the next request if its answer was read whole, else close it."""
        if answer.isclosed() and not answer.will_close:
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __enter__(self) -> "HTTPClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DONE = object()


def _events_of(chunks: Chunks) -> Iterator[dict]:
    """The JSON of each server-sent event of a stream's body."""
    with closing(chunks):
        pending = b""
        for chunk in chunks:
            pending += chunk
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                parsed = _parse_event(event)
                if parsed is _DONE:
                    return
                if parsed is not None:
                    yield parsed
        if pending.strip():
            parsed = _parse_event(pending)
            if parsed not in (None, _DONE):
                yield parsed


def _parse_event(event: bytes) -> Any:
    """One server-sent event: its JSON, _DONE for ``[DONE]``, None for comments; errors raise."""
    data_lines = []
    is_error = False
    for line in event.decode("utf-8").splitlines():
        if line.startswith("data:"):
            data_lines.append(line[5:].strip())
        elif line.startswith("error:"):
            data_lines.append(line[6:].strip())
            is_error = True
    if not data_lines:
        return None
    data = "\n".join(data_lines)
    if data == "[DONE]":
        return _DONE
    parsed = json.loads(data)
    if is_error or (isinstance(parsed, dict) and "error" in parsed and len(parsed) == 1):
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        code = error.get("code", 500) if isinstance(error, dict) else 500
        raise APIError(code if isinstance(code, int) else 500, error)
    return parsed


async def _in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """asyncio.to_thread, imported when first awaited: asyncio is a fifth of ``import llamahost``."""
    import asyncio

    return await asyncio.to_thread(call, *args, **kwargs)


async def _aiter_in_thread(stream: Stream) -> AsyncIterator[Any]:
    """Read a blocking stream from a worker thread, one item at a time. A task cancelled while
    it waits for the next item gets its CancelledError; the stream is cancelled at its source,
    and closed once the worker thread has let go of it."""
    import asyncio

    done = object()
    try:
        while True:
            pending = asyncio.ensure_future(asyncio.to_thread(next, stream, done))
            try:
                item = await asyncio.shield(pending)
            except asyncio.CancelledError:
                await _in_thread(stream.cancel)
                while not pending.done():  # the thread is inside the stream: closing it now would fail
                    try:
                        await asyncio.wait([pending])
                    except asyncio.CancelledError:
                        continue
                if not pending.cancelled():
                    pending.exception()  # retrieved: how the cancelled stream ended is of no interest
                raise
            if item is done:
                return
            yield item
    finally:
        stream.close()


def _shut_down(connection: http.client.HTTPConnection) -> None:
    """End a connection another thread may be reading: shutdown() wakes a blocked read, close() may not."""
    if connection.sock is not None:
        try:
            connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def health_status(url: str, timeout: float) -> int:
    """The status a server's /health answers within ``timeout`` seconds."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    finally:
        connection.close()
