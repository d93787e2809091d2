"""``ChatTemplate``: a model's chat template and vocabulary, read without its weights.

llama.cpp loads a model vocabulary-only; upstream's own chat parsing (the server's oaicompat
parsing and chat templates, with the server's defaults) then gives exactly the prompt and token
count a server of that model would, in milliseconds once loaded. A ChatTemplate is a ``Client``
that answers the routes needing no weights, so ``count_tokens`` and friends are the very calls
of ``Server``. ``chat_template(path, **params)`` keeps one per model file and parameters.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from typing import Any

from ..core import _native, cmdline, config
from ..core.transport import Chunks, Response
from ..errors import ModelLoadError
from ..gguf.info import read_model
from .client import Client

CACHE_SIZE = 8  # model files kept loaded; a large vocabulary holds tens of MB


class ChatTemplate(Client):
    """The template routes of a server for ``path`` with these Server parameters (those that
    shape the prompt matter: ``chat_template``, ``chat_template_file``, ``jinja``, reasoning
    options, ...): /apply-template, /v1/chat/completions/input_tokens, /tokenize and /props
    (``chat_template_caps`` only). ``caps``: the template's capabilities."""

    def __init__(self, path: str | os.PathLike, *, args: list[str] | None = None, **params: Any):
        self.model_path = os.fspath(path)
        read_model(self.model_path)  # a clear error for a missing, foreign or damaged file, or part of one
        # RPC workers do not shape a prompt, and the vocabulary's parse refuses them (core/cmdline.py)
        self.args = cmdline.take_rpc(args if args is not None else config.server_args(self.model_path, params))[1]
        try:
            self._vocab = _native.ChatVocab(self.args)
        except RuntimeError as exc:
            raise ModelLoadError(self.model_path, str(exc)) from None
        self.caps: dict[str, bool] = json.loads(self._vocab.caps())

    def __repr__(self) -> str:
        return f"<llamahost.ChatTemplate {self.model_path!r}>"

    def _send(self, method: str, path: str, body: bytes) -> tuple[Response, Chunks | None]:
        route = (method, path.partition("?")[0])
        try:
            if route == ("GET", "/props"):
                return _ok({"chat_template_caps": self.caps}), None
            if route == ("POST", "/tokenize"):
                request = json.loads(body)
                content = json.dumps(request.get("content", "")).encode()
                tokens = self._vocab.tokenize(content, bool(request.get("add_special", False)),
                                              bool(request.get("parse_special", True)))
                return _ok({"tokens": tokens}), None
            if route in (("POST", "/apply-template"), ("POST", "/v1/chat/completions/input_tokens")):
                applied = json.loads(self._vocab.apply(body))
                if route[1] == "/apply-template":
                    return _ok({"prompt": applied["prompt"]}), None
                return _ok({"input_tokens": applied["n_tokens"], "object": "response.input_tokens"}), None
        except ValueError as exc:  # what the server answers 400
            return _error(400, "invalid_request_error", str(exc)), None
        except RuntimeError as exc:  # and 500: a template that raises, among others
            return _error(500, "server_error", str(exc)), None
        return _error(404, "not_found_error", f"{method} {path} needs the model's weights: use a Server"), None


def chat_template(path: str | os.PathLike, **params: Any) -> ChatTemplate:
    """The ChatTemplate of a model file with these Server parameters, loaded once per file
    (path, modification time and size) and parameters."""
    path = os.path.realpath(os.fspath(path))
    stat = os.stat(path)
    args = config.server_args(path, params)
    key = (path, stat.st_mtime_ns, stat.st_size, tuple(args))
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    template = ChatTemplate(path, args=args)
    with _lock:
        _cache[key] = template
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return template


_cache: "OrderedDict[tuple, ChatTemplate]" = OrderedDict()
_lock = threading.Lock()


def _ok(data: Any) -> Response:
    return Response(200, "application/json; charset=utf-8", {}, json.dumps(data).encode())


def _error(status: int, kind: str, message: str) -> Response:
    body = {"error": {"code": status, "message": message, "type": kind}}
    return Response(status, "application/json; charset=utf-8", {}, json.dumps(body).encode())
