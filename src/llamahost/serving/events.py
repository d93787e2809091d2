"""The events of a router's models (status changes, download progress), to every listener of
``GET /models/sse``, in the shape of upstream's router (server-models.cpp): one server-sent
event per change, ``data: {"model": ..., "event": ..., "data": {...}}``."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Iterator

_END = None


class Events:
    """A broadcast: ``publish`` reaches every open ``stream``; ``close`` ends them all."""

    def __init__(self) -> None:
        self._listeners: set[queue.SimpleQueue] = set()
        self._lock = threading.Lock()
        self._closed = False

    def publish(self, model: str, event: str, data: dict[str, Any] | None = None) -> None:
        record = {"model": model, "event": event}
        if data is not None:
            record["data"] = data
        chunk = b"data: " + json.dumps(record).encode() + b"\n\n"
        with self._lock:
            for listener in self._listeners:
                listener.put(chunk)

    def stream(self) -> Iterator[bytes]:
        """The events from now on, as server-sent event chunks, until close() (or the caller
        stops reading: closing the iterator unsubscribes it)."""
        listener: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if self._closed:
                return
            self._listeners.add(listener)
        try:
            yield b": connected\n\n"  # a comment: the headers go out now, and the client knows it listens
            while (chunk := listener.get()) is not _END:
                yield chunk
        finally:
            with self._lock:
                self._listeners.discard(listener)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for listener in self._listeners:
                listener.put(_END)
