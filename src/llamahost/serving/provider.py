"""``Provider``: what an application's LLM provider needs, over a Pool of local models.

    provider = llamahost.Provider()
    message = await provider.generate(messages, model="model.gguf", tools=tools, max_tokens=256)
    async for delta in provider.stream(messages, model="model.gguf"): ...
    vectors = await provider.embed(["a", "b"], model="embedder.gguf")
    provider.count_tokens(messages, model="org/repo:Q4_K_M")   # before the model is even pulled

Servers come from the pool (one per model, loaded on first use, unloaded when idle); their
parameters from the keywords of ``Provider(...)`` over ``LLAMAHOST_*`` variables
(``LLAMAHOST_N_CTX``, ``LLAMAHOST_N_GPU_LAYERS``, ``LLAMAHOST_THREADS``, ``LLAMAHOST_PARALLEL``,
``LLAMAHOST_CACHE_RAM``, and every other parameter of the README's table). Chats go through
``Client.chat``: messages a template refuses are normalised, tools on a template without tool
syntax are emulated, so every model answers the same OpenAI shapes.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import aclosing
from typing import Any, AsyncIterator, Sequence

from ..core.transport import in_thread
from ..engine.tokens import TokenCount, count_tokens
from .pool import Handle, Pool


class Provider:
    """Chat, streaming, tool calls, embeddings and token counts for an application.

    ``pool``: the Pool to take servers from (a new one, closed with the provider, if None).
    ``params``: Server parameters for every model (``n_ctx=8192``, ``parallel=2``, ...).
    """

    def __init__(self, pool: Pool | None = None, **params: Any):
        self.pool = pool if pool is not None else Pool()
        self.params = params
        self._owns_pool = pool is None
        self._handles: dict[tuple, Handle] = {}
        self._lock = threading.Lock()

    def handle(self, model: str | os.PathLike, **params: Any) -> Handle:
        """The pool's handle for ``model`` with the provider's parameters (and ``params``)."""
        merged = dict(self.params, **params)
        key = (os.fspath(model), json.dumps(merged, sort_keys=True, default=str))
        with self._lock:
            handle = self._handles.get(key)
            if handle is None:
                handle = self._handles[key] = self.pool.get(model, **merged)
        return handle

    async def generate(self, messages: list[dict], *, model: str | os.PathLike, tools: list[dict] | None = None,
                       **opts: Any) -> dict:
        """One assistant message, OpenAI-shaped: ``role``, ``content``, and ``tool_calls`` when
        the model called tools. ``opts``: any chat completion parameter (max_tokens, temperature, ...)."""
        if tools:
            opts["tools"] = tools
        handle = await in_thread(self.handle, model)  # a first use may resolve, download and plan
        out = await handle.achat(messages, **opts)
        return out["choices"][0]["message"]

    async def stream(self, messages: list[dict], *, model: str | os.PathLike, tools: list[dict] | None = None,
                     **opts: Any) -> AsyncIterator[dict]:
        """The assistant message's deltas, OpenAI-shaped (``content`` pieces, ``tool_calls``
        deltas); leaving early cancels the generation."""
        if tools:
            opts["tools"] = tools
        handle = await in_thread(self.handle, model)
        async with aclosing(handle.achat(messages, stream=True, **opts)) as chunks:
            async for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    if choice.get("delta"):
                        yield choice["delta"]

    async def embed(self, texts: str | Sequence[str], *, model: str | os.PathLike, **opts: Any):
        """Embeddings as a float32 numpy array of shape (len(texts), dim), from ``model``
        served with embeddings on."""
        return await in_thread(lambda: self.handle(model, embedding=True).embed(texts, **opts))

    def count_tokens(self, messages_or_text: str | list[dict], *, model: str | os.PathLike,
                     tools: list[dict] | None = None) -> TokenCount:
        """The prompt tokens of a chat or a text, without loading the model (``llamahost.count_tokens``):
        exact when the model is on disk, an estimate (``exact=False``) for a Hub reference not pulled yet."""
        return count_tokens(model, messages_or_text, tools, **self.params)

    def close(self) -> None:
        """Give the handles back, and close the pool if the provider made it."""
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            handle.close()
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> "Provider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
