"""Closing, streams that outlive their server, several servers in one process, API keys."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import openai
import pytest

import llamahost
from llamahost.bench.procfs import os_threads


def test_close_during_a_stream_ends_it_with_a_clear_error(tiny_model):
    srv = llamahost.Server(tiny_model, n_ctx=2048, parallel=1)
    stream = srv.complete("Go on forever:", max_tokens=100000, stream=True, ignore_eos=True)
    next(stream)
    closer = threading.Timer(0.3, srv.close)
    closer.start()
    started = time.perf_counter()
    with pytest.raises(llamahost.ServerClosedError):
        for _ in stream:
            pass
    closer.join()
    assert time.perf_counter() - started < 10
    assert not srv.running
    with pytest.raises(llamahost.ServerClosedError):
        srv.chat([{"role": "user", "content": "hi"}])
    srv.close()  # twice is fine


def test_a_stream_read_after_close_raises(tiny_model):
    srv = llamahost.Server(tiny_model, n_ctx=512)
    stream = srv.complete("Hello", max_tokens=50, stream=True)
    next(stream)
    srv.close()
    with pytest.raises(llamahost.ServerClosedError):
        list(stream)


def test_two_servers_in_one_process(tiny_model, demo_model):
    with llamahost.Server(tiny_model, n_ctx=512) as a, llamahost.Server(demo_model, n_ctx=512) as b:
        assert a.port != b.port
        assert a.complete("x", max_tokens=2)["choices"][0]["text"] is not None
        assert b.complete("x", max_tokens=2)["choices"][0]["text"] is not None
    with llamahost.Server(tiny_model, n_ctx=512) as again:  # and again after both closed
        assert again.health()["status"] == "ok"


def test_threads_do_not_outlive_a_closed_server(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=256) as srv:  # the compute threads a first load starts, which stay
        srv.complete("a", max_tokens=1)
    before, python_before = os_threads(), threading.active_count()
    for _ in range(3):
        with llamahost.Server(tiny_model, n_ctx=256) as srv:
            srv.complete("a", max_tokens=1)
            assert os_threads() > before  # the server's own threads, the engine's C++ ones among them
    assert os_threads() == before and threading.active_count() == python_before


def test_api_key_guards_http_but_not_direct_calls(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=512, api_key="s3cret") as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        r = httpx.post(srv.url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
        assert r.status_code == 401 and "error" in r.json()
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret")
        assert client.completions.create(model="x", prompt="a", max_tokens=1).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong").completions.create(
                model="x", prompt="a", max_tokens=1)
        assert srv.complete("a", max_tokens=1)["choices"]  # in-process: the caller owns the server


def test_embeddings_shape(demo_model):
    with llamahost.Server(demo_model, n_ctx=512, embedding=True, pooling="mean") as srv:
        vectors = srv.embed(["the sea", "the ocean", "a tax form"])
        assert vectors.shape == (3, 640) and vectors.dtype == np.float32
        assert srv.embed("one text").shape == (1, 640)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        assert unit[0] @ unit[1] > unit[0] @ unit[2]
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
        got = client.embeddings.create(model="x", input=["the sea"]).data[0].embedding
        assert np.allclose(got, vectors[0], atol=1e-4)


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_tools_are_rendered_and_tool_history_accepted(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=2048, jinja=True) as srv:
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        prompt = srv.request("POST", "/apply-template", {"messages": messages, "tools": TOOLS}).json()["prompt"]
        assert "get_weather" in prompt and "<tools>" in prompt
        history = messages + [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
        ]
        out = srv.chat(history, tools=TOOLS, max_tokens=8)
        assert out["choices"][0]["message"]["role"] == "assistant"
        assert out["usage"]["prompt_tokens"] == srv.count_tokens(history, tools=TOOLS)
        rendered = srv.request("POST", "/apply-template", {"messages": history, "tools": TOOLS}).json()["prompt"]
        assert "<tool_call>" in rendered and "temp_c" in rendered


def test_rerank_with_a_reranker_model(tmp_path):
    import synthetic

    model = synthetic.write_model(tmp_path / "reranker.gguf", "bert", n_ctx_train=512, reranker=True)
    with llamahost.Server(model, n_ctx=512, reranking=True) as srv:
        documents = ["the sea is wide", "tax forms are due", "ships sail the ocean"]
        results = srv.rerank("sailing on the sea", documents)
        # the engine's own scores, over HTTP: the order must be theirs, best first
        http = httpx.post(srv.url + "/v1/rerank", json={"query": "sailing on the sea", "documents": documents}).json()
        engine = {r["index"]: r["relevance_score"] for r in http["results"]}
        assert len(set(engine.values())) == 3  # distinct scores: an order to check
        assert [r["index"] for r in results] == sorted(engine, key=engine.get, reverse=True)
        assert {r["index"]: r["relevance_score"] for r in results} == pytest.approx(engine)
        assert [r["index"] for r in srv.rerank("sailing on the sea", documents, top_n=2)] == [
            r["index"] for r in results[:2]]
