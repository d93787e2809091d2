"""How an answer comes back from a llama.cpp server, whatever carries it: ``Response`` (status,
headers, body), ``Chunks`` (a streamed body), ``Stream`` (a stream's parsed events), the parsing
of server-sent events, and the plumbing shared by every transport: reading a blocking stream from
asyncio, a server's /health, a free loopback port.

``Transport`` is what the layers above need of a client to send a request again (chat
normalisation, tool emulation): its ``_send`` and its ``props()``.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, Protocol
from urllib.parse import urlsplit

from ..errors import APIError


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


class Transport(Protocol):
    """A client as the chat rules use it: one route called, and the server's properties."""

    def _send(self, method: str, path: str, body: bytes) -> tuple[Response, Chunks | None]: ...

    def props(self) -> dict: ...


_DONE = object()
_LINE_END = re.compile(r"\r\n|\r|\n")


def events_of(chunks: Chunks) -> Iterator[dict]:
    """The JSON of each server-sent event of a stream's body."""
    with closing(chunks):
        pending = b""
        for chunk in chunks:
            pending += chunk
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                parsed = parse_event(event)
                if parsed is _DONE:
                    return
                if parsed is not None:
                    yield parsed
        if pending.strip():
            parsed = parse_event(pending)
            if parsed not in (None, _DONE):
                yield parsed


def parse_event(event: bytes) -> Any:
    """One server-sent event: its JSON, _DONE for ``[DONE]``, None for comments; errors raise."""
    data_lines = []
    is_error = False
    # an event's lines end with CR, LF or CRLF only: str.splitlines() would also cut at U+2028, U+0085
    # and the other separators a JSON string carries raw (a generated token may be one)
    for line in _LINE_END.split(event.decode("utf-8")):
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


async def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """asyncio.to_thread, imported when first awaited: asyncio is a fifth of ``import llamahost``."""
    import asyncio

    return await asyncio.to_thread(call, *args, **kwargs)


async def aiter_in_thread(stream: Stream) -> AsyncIterator[Any]:
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
                await in_thread(stream.cancel)
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


def shut_down(connection: http.client.HTTPConnection) -> None:
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


def free_port() -> int:
    """A loopback port no one listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
