"""Tool calls on every template: native where the template has tool syntax, emulated (tools in the
system prompt, a grammar, OpenAI tool_calls) where it has none, streamed as tool-call deltas.

The demo model is a base model with no chat template (llama.cpp falls back to ChatML, which has
no tool syntax): with the grammar forcing a call, even it must answer with a well-formed one.
"""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import llamahost
import synthetic
from llamahost.chat.tools import scan_calls, tool_grammar

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "system", "content": "You are a helpful assistant."},
       {"role": "user", "content": "What is the weather in Paris?"}]


def _check_calls(message: dict) -> list[dict]:
    """The message's tool calls, checked: declared names, arguments that parse and fit the schema."""
    calls = message["tool_calls"]
    assert calls and message["content"] is None
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        arguments = json.loads(call["function"]["arguments"])
        if call["function"]["name"] == "get_weather":
            assert isinstance(arguments["city"], str) and arguments["unit"] in ("C", "F")
        else:
            assert call["function"]["name"] == "get_time" and isinstance(arguments["zone"], str)
    return calls


def test_demo_template_has_no_tool_syntax_and_qwen3_has(server, tiny_model):
    assert server.props()["chat_template_caps"]["supports_tools"] is False
    assert llamahost.chat_template(tiny_model).caps["supports_tools"] is True


@pytest.fixture(scope="module")
def forced(server):
    """The demo model's answer with a call required (generated once: a grammar over a 262k-token
    vocabulary makes each token slow on this CPU)."""
    return server.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=0)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    """A tiny model without a chat template (ChatML, no tool syntax) and a 32k-token vocabulary."""
    return synthetic.write_llama(tmp_path_factory.mktemp("plain") / "plain.gguf")


def test_a_base_model_forced_to_call_answers_an_openai_tool_call(forced):
    ChatCompletion.model_validate(forced)  # the shape the official client parses
    assert forced["choices"][0]["finish_reason"] == "tool_calls"
    _check_calls(forced["choices"][0]["message"])


def test_emulated_tool_call_streams_as_tool_call_deltas(server, forced):
    chunks = list(server.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=0, stream=True))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any(d.get("content") for d in deltas)
    pieces = [t for d in deltas for t in d.get("tool_calls", [])]
    head = pieces[0]
    assert head["index"] == 0 and head["id"].startswith("call_") and head["function"]["arguments"] == ""
    arguments = "".join(p["function"]["arguments"] for p in pieces)
    assert len(pieces) > 3  # the arguments arrive piece by piece
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    call = forced["choices"][0]["message"]["tool_calls"][0]["function"]
    assert (head["function"]["name"], arguments) == (call["name"], call["arguments"])


def test_auto_lets_the_model_answer_in_text_or_call(server):
    out = server.chat(ASK, tools=TOOLS, max_tokens=8, temperature=0)
    message = out["choices"][0]["message"]
    if message.get("tool_calls"):
        _check_calls(message)
    else:
        assert message["content"] and message["content"][0] not in "{["


def test_tool_choice_names_a_tool_or_none(plain_model):
    # random weights never end a free string: a closed set of values keeps the call finite
    zones = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["CET", "UTC"]}}, "required": ["zone"]}}}
    tools = [WEATHER, zones]
    with llamahost.Server(plain_model, n_ctx=1024, seed=1) as srv:
        named = srv.chat(ASK, tools=tools, tool_choice={"type": "function", "function": {"name": "get_time"}},
                         max_tokens=100)
        (call,) = _check_calls(named["choices"][0]["message"])
        assert call["function"]["name"] == "get_time"
        none = srv.chat(ASK, tools=tools, tool_choice="none", max_tokens=4)
        assert not none["choices"][0]["message"].get("tool_calls")


def test_tool_history_is_written_into_the_prompt_for_a_template_without_tool_syntax(server):
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
    ]
    from llamahost.chat.tools import emulated_request

    request, _ = emulated_request({"messages": history, "tools": TOOLS})
    prompt = server.request("POST", "/apply-template", request).json()["prompt"]
    assert '"name": "get_weather"' in prompt and "Result of get_weather" in prompt and '{"temp": 18}' in prompt
    assert "You can call these tools" in prompt and '"get_time"' in prompt
    out = server.chat(history, tools=TOOLS, max_tokens=8, temperature=0)
    assert out["usage"]["prompt_tokens"] == server.count_tokens(history, tools=TOOLS)


def test_native_tool_calling_where_the_template_has_tool_syntax(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=2048) as srv:
        prompt = srv.request("POST", "/apply-template", {"messages": ASK, "tools": TOOLS}).json()["prompt"]
        assert "<tools>" in prompt and "You can call these tools" not in prompt
        out = srv.chat(ASK, tools=TOOLS, max_tokens=4)  # random weights: the shape, not the content
        ChatCompletion.model_validate(out)
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")
        http = client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, max_tokens=4)
        assert http.usage.prompt_tokens == out["usage"]["prompt_tokens"]


def test_grammars_and_tools_exclude_each_other_as_upstream_says(server, tiny_model):
    with pytest.raises(llamahost.APIError) as emulated:
        server.chat(ASK, tools=TOOLS, grammar='root ::= "x"', max_tokens=2)
    with llamahost.Server(tiny_model, n_ctx=512) as srv, pytest.raises(llamahost.APIError) as native:
        srv.chat(ASK, tools=TOOLS, grammar='root ::= "x"', max_tokens=2)
    assert emulated.value.status == native.value.status == 400
    for tools, choice in ((TOOLS, {"type": "function", "function": {"name": "nope"}}), ([{"type": "function"}], "auto")):
        with pytest.raises(llamahost.APIError) as refused:
            server.chat(ASK, tools=tools, tool_choice=choice)
        assert refused.value.status == 400


def test_scanning_a_call_as_it_streams():
    text = '[{"name": "get_time", "arguments": {"zone": "CET"}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]'
    seen = []
    for end in range(1, len(text) + 1):
        calls = scan_calls(text[:end])
        for i, call in enumerate(calls):
            if i == len(seen):
                seen.append("")
            assert call.arguments.startswith(seen[i])  # arguments only grow
            seen[i] = call.arguments
    assert [(c.name, json.loads(c.arguments), c.complete) for c in scan_calls(text)] == [
        ("get_time", {"zone": "CET"}, True), ("get_weather", {"city": "Rome"}, True)]
    assert scan_calls("Plain text {not a call}") == []


def test_the_grammar_names_only_declared_tools():
    grammar = tool_grammar(TOOLS, required=False, parallel=True)
    assert '"\\"get_weather\\""' in grammar and '"\\"get_time\\""' in grammar
    assert grammar.count("root ::=") == 1 and "plain-text" in grammar
    assert "plain-text" not in tool_grammar(TOOLS, required=True, parallel=False)
