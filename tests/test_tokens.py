"""count_tokens without loading weights: exact against real servers, cached per model file, and
a tiktoken estimate for Hub references not pulled yet, whose error is measured here."""

from __future__ import annotations

import os
import statistics
import time

import pytest

import llamahost
import synthetic
from llamahost import ChatTemplate, chat_template, count_tokens, estimate_tokens

HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CHATS = [
    HELLO,
    [{"role": "system", "content": "Be brief."}] + HELLO,
    HELLO + [{"role": "assistant", "content": "The sea is wide."}, {"role": "user", "content": "Another one, in German."}],
    [{"role": "user", "content": "hi"}, {"role": "user", "content": "are you there?"}],  # normalised where refused
]
HISTORY = [{"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
               "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'}]

# a fixed corpus for the estimate: prose, code, data, other scripts, chats
TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])",
    '{"id": 1234, "name": "Ada Lovelace", "tags": ["math", "engines"], "born": "1815-12-10", "score": 98.6}',
    "Der schnelle braune Fuchs springt über den faulen Hund. Zwölf Boxkämpfer jagen Viktor quer über den Sylter Deich.",
    "Le cœur a ses raisons que la raison ne connaît point. Où est la bibliothèque municipale, s'il vous plaît ?",
    "敏捷的棕色狐狸跳过了懒狗。今天天气很好，我们去公园散步吧。",
    "Числа: 3.14159, 2.71828, 1.41421 и 1.73205; даты: 2024-01-31, 1999-12-31.",
    "SELECT name, COUNT(*) FROM orders o JOIN users u ON u.id = o.user_id GROUP BY name HAVING COUNT(*) > 5;",
]
ESTIMATE_CHATS = CHATS[:3] + [[{"role": "system", "content": TEXTS[3]}, {"role": "user", "content": TEXTS[1]}]]
VOCABULARIES = ("llama-spm", "qwen2", "llama-bpe")
MAX_MEAN_ERROR = 0.35  # mean relative error of the estimate over the corpus, per vocabulary


def test_exact_against_the_demo_server(server, demo_model):
    for messages in CHATS:
        expected = server.chat(messages, max_tokens=1)["usage"]["prompt_tokens"]
        got = count_tokens(demo_model, messages)
        assert got.exact and got.tokens == expected == server.count_tokens(messages)
    # tools on the demo model's template (no tool syntax) are emulated: described in the prompt
    expected = server.chat(HELLO, tools=TOOLS, max_tokens=1)["usage"]["prompt_tokens"]
    assert count_tokens(demo_model, HELLO, TOOLS).tokens == expected == server.count_tokens(HELLO, tools=TOOLS)
    text = "The quick brown fox"
    assert count_tokens(demo_model, text).tokens == server.complete(text, max_tokens=1)["usage"]["prompt_tokens"]


def test_exact_with_a_qwen3_template_and_native_tools(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=2048) as srv:
        for messages, tools in [(HELLO, None), (HELLO, TOOLS), (HISTORY, TOOLS), (CHATS[2], TOOLS)]:
            out = srv.chat(messages, tools=tools, max_tokens=1) if tools else srv.chat(messages, max_tokens=1)
            assert count_tokens(tiny_model, messages, tools).tokens == out["usage"]["prompt_tokens"]
    assert "<tools>" in chat_template(tiny_model).request("POST", "/apply-template",
                                                         {"messages": HELLO, "tools": TOOLS}).json()["prompt"]


def test_template_parameters_count_as_the_server_does(tiny_model):
    other = synthetic.TEMPLATE_DIR / "llama-cpp-deepseek-r1.jinja"
    with llamahost.Server(tiny_model, n_ctx=1024, chat_template_file=str(other)) as srv:
        expected = srv.chat(CHATS[2], max_tokens=1)["usage"]["prompt_tokens"]
    assert count_tokens(tiny_model, CHATS[2], chat_template_file=str(other)).tokens == expected
    assert count_tokens(tiny_model, CHATS[2]).tokens != expected


def test_cold_and_warm_times(demo_model):
    started = time.perf_counter()
    ChatTemplate(demo_model).count_tokens(HELLO)  # what the first count_tokens of a model file does
    cold = time.perf_counter() - started
    count_tokens(demo_model, HELLO)
    warm = []
    for _ in range(20):
        started = time.perf_counter()
        count_tokens(demo_model, HELLO)
        warm.append(time.perf_counter() - started)
    print(f"\ncount_tokens on the demo model (262k-token vocabulary): cold {cold * 1000:.0f} ms, "
          f"warm {statistics.median(warm) * 1000:.2f} ms (median of 20)")
    assert statistics.median(warm) < cold / 10


def test_one_template_per_model_file_until_it_changes(tmp_path):
    model = synthetic.write_llama(tmp_path / "m.gguf")
    first = chat_template(model)
    assert chat_template(model) is first
    assert chat_template(model, chat_template="chatml") is not first  # other parameters, another template
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert chat_template(model) is not first  # the file changed: read again


def test_a_hub_reference_not_pulled_gets_an_estimate_marked_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAHOST_HOME", str(tmp_path))  # an empty library
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be downloaded
    got = count_tokens("someorg/some-model-GGUF:Q4_K_M", HELLO)
    assert not got.exact and got.method.startswith("estimate")
    assert str(got).startswith("~") and str(got).endswith("(estimate)")
    assert got == estimate_tokens(HELLO)
    assert not list(tmp_path.rglob("*.gguf"))
    with pytest.raises(FileNotFoundError):
        count_tokens(tmp_path / "missing.gguf", HELLO)


def _exact_counts(template: ChatTemplate) -> list[int]:
    return [template.count_tokens(t) for t in TEXTS] + [template.count_tokens(c) for c in ESTIMATE_CHATS]


def test_estimate_error_against_exact_counts(demo_model):
    estimates = [estimate_tokens(t).tokens for t in TEXTS] + [estimate_tokens(c).tokens for c in ESTIMATE_CHATS]
    subjects = {"gemma3 (demo model)": ChatTemplate(demo_model)}
    subjects.update({name: ChatTemplate(synthetic.VOCAB_DIR / f"ggml-vocab-{name}.gguf", verbosity=1)
                     for name in VOCABULARIES})
    print(f"\ntiktoken cl100k_base estimate against exact counts, mean |relative error| "
          f"({len(TEXTS)} texts, {len(ESTIMATE_CHATS)} chats through each model's template):")
    for name, template in subjects.items():
        exact = _exact_counts(template)
        errors = [(e - x) / x for e, x in zip(estimates, exact)]
        texts, chats = errors[:len(TEXTS)], errors[len(TEXTS):]
        mean = statistics.mean(abs(e) for e in errors)
        print(f"  {name:20s} all {mean:6.1%}   texts {statistics.mean(map(abs, texts)):6.1%}   "
              f"chats {statistics.mean(map(abs, chats)):6.1%}   worst {max(errors, key=abs):+7.1%}")
        assert mean < MAX_MEAN_ERROR, name
