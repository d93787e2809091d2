"""The OpenAI-shaped calls (chat, complete, embed, tokenize, ...) over any transport.

``Client`` needs one thing from a subclass, ``_send``: call a route and return its
``Response``, and for a streamed answer the ``Chunks`` of its body. ``Server`` sends to
the in-process route handlers; ``HTTPClient`` sends over HTTP (a worker process of a
pool, or any llama-server); a pool's handle sends to whichever of the two serves its model.
"""

from __future__ import annotations

import http.client
import json
import threading
from functools import partial
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from ..chat.messages import CHAT_ROUTES, send_normalized
from ..chat.tools import emulated_request, needs_emulation
from ..core.transport import Chunks, Response, Stream, aiter_in_thread, events_of, in_thread, raise_for, shut_down
from ..errors import APIError, ServerClosedError


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
        return Stream(events_of(chunks), chunks.cancel)

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
            return aiter_in_thread(self.chat(messages, stream=True, **opts))
        return in_thread(self.chat, messages, **opts)

    def acomplete(self, prompt: str | list, *, stream: bool = False, **opts: Any):
        """Async complete, like achat()."""
        if stream:
            return aiter_in_thread(self.complete(prompt, stream=True, **opts))
        return in_thread(self.complete, prompt, **opts)

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
            return response, Chunks(self._read(answer), connection.close, partial(shut_down, connection))
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


