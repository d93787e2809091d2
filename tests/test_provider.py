"""Provider: generate, stream, embed and count_tokens over a Pool, configured by keywords and
LLAMAHOST_* variables; the same servers answer the official openai client over HTTP."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import openai
import pytest

import llamahost
import synthetic
from test_models import gguf_files, home, hub  # noqa: F401 - the Hub fixtures

HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]
AWKWARD = [{"role": "user", "content": "hi"}, {"role": "system", "content": "Be brief."},
           {"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def pool():
    with llamahost.Pool(idle_ttl=None) as pool:
        yield pool


@pytest.fixture(scope="module")
def strict_model(tmp_path_factory):
    """A tiny model with Gemma 2's template (strict alternation, no system role)."""
    template = (synthetic.TEMPLATE_DIR / "google-gemma-2-2b-it.jinja").read_text()
    return synthetic.write_llama(tmp_path_factory.mktemp("provider") / "strict.gguf", chat_template=template)


def test_generate_and_stream_match_the_openai_client_over_http(pool, demo_model):
    provider = llamahost.Provider(pool, n_ctx=1024, parallel=1, seed=7)

    async def main():
        message = await provider.generate(HELLO, model=demo_model, max_tokens=12, temperature=0)
        deltas = [d async for d in provider.stream(HELLO, model=demo_model, max_tokens=12, temperature=0)]
        return message, deltas

    message, deltas = asyncio.run(main())
    assert message["role"] == "assistant" and message["content"]
    assert "".join(d.get("content") or "" for d in deltas) == message["content"]
    client = openai.OpenAI(base_url=provider.handle(demo_model).url + "/v1", api_key="unused")
    http = client.chat.completions.create(model="x", messages=HELLO, max_tokens=12, temperature=0)
    assert http.choices[0].message.content == message["content"]
    assert http.usage.prompt_tokens == provider.count_tokens(HELLO, model=demo_model).tokens
    provider.close()
    assert pool.stats()  # a provider given a pool leaves it open


def test_awkward_messages_and_emulated_tools_through_the_provider(pool, strict_model):
    tools = [{"type": "function", "function": {"name": "pick", "parameters": {
        "type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"]}}}]

    async def main():
        with llamahost.Provider(pool, n_ctx=1024) as provider:
            text = await provider.generate(AWKWARD, model=strict_model, max_tokens=2)
            # greedy, with room: a random model sampled freely may spend its tokens on the whitespace
            # the call's grammar allows between JSON tokens, and a cut-off call is text, not a call
            called = await provider.generate(AWKWARD, model=strict_model, tools=tools, tool_choice="required",
                                             max_tokens=160, temperature=0)
            deltas = [d async for d in provider.stream(AWKWARD, model=strict_model, tools=tools,
                                                       tool_choice="required", max_tokens=160, temperature=0)]
            return text, called, deltas

    text, called, deltas = asyncio.run(main())
    assert text["role"] == "assistant"
    assert called.get("tool_calls") and called["tool_calls"][0]["function"]["name"] == "pick", called
    assert json.loads(called["tool_calls"][0]["function"]["arguments"]) in ({"colour": "red"}, {"colour": "blue"})
    streamed = [t for d in deltas for t in d.get("tool_calls", [])]
    assert streamed[0]["function"]["name"] == "pick"


def test_embed(pool, tmp_path):
    model = synthetic.write_model(tmp_path / "bert.gguf", "bert", n_ctx_train=512)
    with llamahost.Provider(pool, n_ctx=512) as provider:
        vectors = asyncio.run(provider.embed(["the sea", "a tax form"], model=model))
        assert vectors.shape == (2, 128) and vectors.dtype == np.float32


def test_configuration_from_llamahost_variables(pool, tiny_model, monkeypatch):
    monkeypatch.setenv("LLAMAHOST_N_CTX", "1536")
    monkeypatch.setenv("LLAMAHOST_PARALLEL", "2")
    monkeypatch.setenv("LLAMAHOST_THREADS", "1")
    monkeypatch.setenv("LLAMAHOST_CACHE_RAM", "64")
    monkeypatch.setenv("LLAMAHOST_N_GPU_LAYERS", "0")
    with llamahost.Provider(pool) as provider:
        handle = provider.handle(tiny_model)
        props = handle.props()
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["n_ctx"] == 1536 // 2
    with llamahost.Provider(pool, n_ctx=1024, parallel=1) as provider:  # keywords win
        assert provider.handle(tiny_model).props()["default_generation_settings"]["n_ctx"] == 1024


def test_count_tokens_exact_on_disk_estimate_before_a_pull(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAHOST_HOME", str(tmp_path))
    with llamahost.Provider() as provider:  # its own pool, closed with it
        exact = provider.count_tokens(HELLO, model=tiny_model)
        assert exact.exact and exact.tokens == llamahost.count_tokens(tiny_model, HELLO).tokens
        estimate = provider.count_tokens(HELLO, model="someorg/some-model-GGUF")
        assert not estimate.exact
        assert provider.pool.stats() == []  # nothing was loaded for either


def test_a_first_use_leaves_the_event_loop_running(hub, home):
    """A model's first use resolves it, downloads it and loads it: the loop keeps running meanwhile
    (a ticker's longest gap is measured over a download held up for half a second, and the load)."""
    import threading
    import time

    hub.stall_after = 1 << 20
    threading.Timer(0.5, hub.release.set).start()
    provider = llamahost.Provider(n_ctx=512, parallel=1)

    async def main() -> tuple[float, str]:
        gaps, last, done = [0.0], time.monotonic(), False

        async def tick() -> None:
            nonlocal last
            while not done:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        message = await provider.generate(HELLO, model="test-org/chat-GGUF", max_tokens=2)
        done = True
        await ticker
        return max(gaps), message["content"]

    try:
        longest, content = asyncio.run(main())
    finally:
        provider.close()
    assert content is not None
    assert longest < 0.25, f"the event loop stood still for {longest:.2f} s"
