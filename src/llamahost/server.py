"""``Server``: llama.cpp's own server running inside this process.

It listens on a loopback port for any HTTP client, and the same route handlers are
called directly from Python (no socket, no JSON over HTTP) by the methods below.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Sequence

from . import _native, config, gguf
from .estimate import fitted_context
from .errors import APIError, ModelLoadError, ServerClosedError

if TYPE_CHECKING:
    from .estimate import DeviceEstimate


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


def _raise_for(response: Response) -> None:
    if response.ok:
        return
    try:
        error = response.json().get("error", response.body.decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        error = response.body.decode("utf-8", "replace")
    raise APIError(response.status, error)


class Server:
    """llama.cpp's server for one model, in this process.

    ``Server("model.gguf", n_ctx=4096, parallel=4)``; every keyword is a parameter from
    the README's table or any llama-server option spelled with underscores
    (``cache_ram=2048`` is ``--cache-ram 2048``). Use as a context manager, or call close().
    """

    def __init__(self, model: str | os.PathLike, **params: Any):
        path = os.fspath(model)
        gguf.read_header(path)  # a clear error for a missing, foreign or damaged file
        fitted = fitted_context(path, params)
        if fitted is not None:
            params = dict(params, n_ctx=fitted)
        self._start(path, config.server_args(path, params))

    @classmethod
    def from_args(cls, args: Sequence[str]) -> "Server":
        """A server from llama-server's own command-line arguments, verbatim."""
        args = [str(a) for a in args]
        config.reject_exiting_flags(args)
        self = cls.__new__(cls)
        engine = _native.Engine(args)  # upstream's parser; ValueError with its message
        path = _model_path(args)
        if path is not None:
            gguf.read_header(path)
        self._start(path or "?", args, engine)
        return self

    def _start(self, path: str, args: list[str], engine: "_native.Engine | None" = None) -> None:
        self.model_path = path
        self.args = args
        self._lock = threading.Lock()
        self._closed = False
        self._engine = engine if engine is not None else _native.Engine(args)
        try:
            self._engine.start()  # loads the model with the GIL released
        except RuntimeError as exc:
            self._closed = True
            raise ModelLoadError(path, str(exc)) from None
        self.host = _arg_value(args, ("--host",), "127.0.0.1")
        self.port = self._engine.port

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

    # -- any route -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any) -> tuple[Response, int]:
        if self._closed:
            raise ServerClosedError("this server is closed")
        if body is None:
            raw = b""
        elif isinstance(body, (bytes, bytearray)):
            raw = bytes(body)
        else:
            raw = json.dumps(body).encode("utf-8")
        try:
            status, content_type, headers, data, stream_id = self._engine.call(method.upper(), path, raw)
        except RuntimeError as exc:
            raise ServerClosedError(str(exc)) from None
        except IndexError:  # the body llama-server's HTTP layer sends for an unknown path
            error = {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}
            return Response(404, "application/json; charset=utf-8", {}, json.dumps(error).encode()), 0
        return Response(status, content_type, headers, data or b""), stream_id

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """Call any route directly, as an HTTP client would (no socket involved).

        A streamed answer is read whole into ``body``; use the stream= methods to iterate.
        """
        response, stream_id = self._call(method, path, body)
        if stream_id:
            response.body = b"".join(self._raw_chunks(stream_id))
        return response

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self.request(method, path, body)
        _raise_for(response)
        return response.json()

    def _raw_chunks(self, stream_id: int) -> Iterator[bytes]:
        try:
            more = True
            while more:
                try:
                    chunk, more = self._engine.next_chunk(stream_id)
                except RuntimeError as exc:
                    raise ServerClosedError(str(exc)) from None
                if chunk:
                    yield chunk
        finally:
            # leaving early (break, an exception, garbage collection) cancels the generation
            self._engine.close_stream(stream_id)

    def _events(self, path: str, body: dict) -> Iterator[dict]:
        """POST with stream=True and yield each server-sent event's JSON."""
        response, stream_id = self._call("POST", path, dict(body, stream=True))
        if not stream_id:
            _raise_for(response)
            raise APIError(response.status, "expected a stream, got a plain response")
        pending = b""
        for chunk in self._raw_chunks(stream_id):
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

    # -- OpenAI-shaped calls -------------------------------------------------------------------

    def chat(self, messages: list[dict], *, stream: bool = False, **opts: Any) -> Any:
        """/v1/chat/completions: the response dict, or with stream=True an iterator of chunks."""
        body = dict(opts, messages=messages)
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
        return asyncio.to_thread(self.chat, messages, **opts)

    def acomplete(self, prompt: str | list, *, stream: bool = False, **opts: Any):
        """Async complete, like achat()."""
        if stream:
            return _aiter_in_thread(self.complete(prompt, stream=True, **opts))
        return asyncio.to_thread(self.complete, prompt, **opts)

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
        return self._json("POST", "/v1/chat/completions/input_tokens", body)["input_tokens"]

    # -- state ---------------------------------------------------------------------------------

    def health(self) -> dict:
        return self._json("GET", "/health")

    def props(self) -> dict:
        return self._json("GET", "/props")

    def models(self) -> dict:
        return self._json("GET", "/v1/models")

    def memory_breakdown(self) -> "tuple[DeviceEstimate, ...]":
        """What the loaded model and context really hold per device (host last, as "CPU"):
        weights, kv_cache and compute bytes, the same shape as ``estimate().devices``."""
        from .estimate import from_engine

        data = json.loads(self._engine.memory_breakdown())
        return from_engine(self.model_path, data).devices

    def routes(self) -> list[str]:
        """The routes this server answers (the same with and without HTTP)."""
        return self._engine.routes()


_DONE = object()


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


async def _aiter_in_thread(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    """Drive a blocking iterator from a worker thread, one item at a time."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, iterator, done)
            if item is done:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _arg_value(args: Sequence[str], names: tuple[str, ...], default: str | None) -> str | None:
    """The value of the last of ``names`` in a llama-server command line."""
    value = default
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    return value


def _model_path(args: Sequence[str]) -> str | None:
    return _arg_value(args, ("-m", "--model"), os.environ.get("LLAMA_ARG_MODEL"))
