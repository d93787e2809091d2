"""normalize_messages: every template of llama.cpp's collection renders every awkward message
list once normalised; Server.chat and the pool's router retry a refused chat normalised."""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import llamahost
import synthetic
from llamahost import ChatTemplate, normalize_messages
from llamahost import Router

VOCAB = synthetic.VOCAB_DIR / "ggml-vocab-llama-spm.gguf"  # the smallest real vocabulary: 80 ms to load
TEMPLATES = sorted(synthetic.TEMPLATE_DIR.glob("*.jinja"))

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TWO_CALLS = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]
USER = {"role": "user", "content": "hi"}

# message lists OpenAI answers and some templates refuse
AWKWARD = {
    "two users": [USER, {"role": "user", "content": "are you there?"}],
    "system late": [USER, {"role": "assistant", "content": "hello"}, {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "bye"}],
    "system last": [USER, {"role": "system", "content": "Be brief."}],
    "two systems": [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Be kind."}, USER],
    "system only": [{"role": "system", "content": "Be brief."}],
    "developer": [{"role": "developer", "content": "Be brief."}, USER],
    "empty contents": [{"role": "system", "content": ""}, USER, {"role": "assistant", "content": ""},
                       {"role": "user", "content": "again"}],
    "null content": [USER, {"role": "assistant", "content": None}, {"role": "user", "content": "again"}],
    "blank user": [{"role": "user", "content": "   "}, USER],
    "only an empty user": [{"role": "user", "content": ""}],
    "content parts": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                      {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}],
    "names": [{"role": "system", "content": "Be brief.", "name": "policy"}, {"role": "user", "content": "hi", "name": "al"},
              {"role": "assistant", "content": "hello", "name": "bot"}, {"role": "user", "content": "bye", "name": "bo"}],
    "assistant first": [{"role": "assistant", "content": "How can I help?"}, USER],
    "only the assistant": [{"role": "assistant", "content": "Hello!"}],
    "two assistants": [USER, {"role": "assistant", "content": "hello"}, {"role": "assistant", "content": "anyone?"},
                       {"role": "user", "content": "yes"}],
    "tool round": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                   {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'}],
    "tool result without id": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                               {"role": "tool", "content": "18"}],
    "orphan tool result": [USER, {"role": "tool", "tool_call_id": "call_9", "content": "42"}],
    "tool result first": [{"role": "tool", "tool_call_id": "x", "content": "42"}, {"role": "user", "content": "so?"}],
    "parallel calls, then the user": [
        USER, {"role": "assistant", "content": "Checking.", "tool_calls": TWO_CALLS},
        {"role": "tool", "tool_call_id": "call_a", "content": "18"}, {"role": "tool", "tool_call_id": "call_b", "content": "24"},
        {"role": "user", "content": "Thanks"}],
}


def _render(template: ChatTemplate, messages: list[dict]) -> str | None:
    """The template's error for ``messages``, or None when it renders them."""
    response = template._send("POST", "/apply-template", json.dumps({"messages": messages}).encode())[0]
    return None if response.ok else response.json()["error"]["message"]


def _run_corpus(path) -> tuple[str, list[str], list[tuple[str, list[str], str]]]:
    template = ChatTemplate(VOCAB, chat_template_file=str(path), verbosity=1)
    refused, still = [], []
    for name, messages in AWKWARD.items():
        if _render(template, messages) is not None:
            refused.append(name)
        normalized = normalize_messages(messages, template)
        error = _render(template, normalized.messages)
        if error is not None:
            still.append((name, normalized.changes, error[-300:]))
    return path.name, refused, still


def test_every_template_renders_every_awkward_list_once_normalised():
    assert len(TEMPLATES) >= 70
    with ThreadPoolExecutor(2) as pool:  # renders release the GIL
        results = list(pool.map(_run_corpus, TEMPLATES))
    refused = {name: r for name, r, _ in results if r}
    print(f"\n{len(TEMPLATES)} templates x {len(AWKWARD)} awkward lists: {sum(map(len, refused.values()))} refused "
          f"as given, by {len(refused)} templates; 0 after normalisation expected")
    for name, cases in refused.items():
        print(f"  {name}: {', '.join(cases)}")
    failures = [(name, s) for name, _, still in results for s in still]
    assert failures == []
    assert len(refused) >= 10  # the corpus does hit strict templates (Mistral, Gemma 2, Qwen 3.5, Llama 3.x, ...)


def test_clean_messages_are_left_alone():
    messages = [{"role": "system", "content": "Be brief."}, USER, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"}]
    normalized = normalize_messages(messages, {"supports_system_role": True})
    assert normalized.messages == messages and normalized.changes == []


def test_merging_moving_folding_and_dropping_say_what_changed():
    messages = [USER, {"role": "user", "content": ""}, {"role": "user", "content": "there"},
                {"role": "system", "content": "Be brief.", "name": "policy"}]
    before = copy.deepcopy(messages)
    out, changes = normalize_messages(messages, {"supports_system_role": True})
    assert out == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi\n\nthere"}]
    assert changes == ["name fields dropped", "empty messages dropped", "system message moved to the start",
                       "consecutive user messages merged"]
    assert messages == before  # the input is not modified
    folded, changes = normalize_messages(out, {"supports_system_role": False})
    assert folded == [{"role": "user", "content": "Be brief.\n\nhi\n\nthere"}]
    assert changes == ["system prompt folded into the first user message (the template has no system role)"]


def test_tool_history_is_paired_renamed_and_written_as_text_where_needed():
    out, changes = normalize_messages(AWKWARD["tool result without id"], {"supports_tool_calls": True})
    call_id = out[1]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum()
    assert out[2] == {"role": "tool", "content": "18", "tool_call_id": call_id, "name": "get_weather"}
    assert changes == ["tool call ids rewritten to nine alphanumeric characters"]
    out, changes = normalize_messages(AWKWARD["orphan tool result"], {})
    assert out == [{"role": "user", "content": "hi\n\nResult of a tool:\n42"}]
    out, _ = normalize_messages(AWKWARD["tool round"], {"supports_tool_calls": False})
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert json.loads(out[1]["content"]) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    out, changes = normalize_messages(AWKWARD["parallel calls, then the user"], {"supports_parallel_tool_calls": False})
    # one call per turn; the last round, answered by the user rather than the assistant, as text
    assert [(m["role"], len(m.get("tool_calls", []))) for m in out] == [
        ("user", 0), ("assistant", 1), ("tool", 0), ("assistant", 0), ("user", 0)]
    assert "tool rounds that the user answered written as text" in changes


def test_anything_but_a_message_list_is_returned_as_it_is():
    for bad in ("hi", 5, [1, 2], [{"content": "no role"}]):
        assert normalize_messages(bad, {}) == (bad, [])


@pytest.fixture(scope="module")
def strict_model(tmp_path_factory):
    """A tiny model with Gemma 2's template: no system role, strict user/assistant alternation."""
    template = (synthetic.TEMPLATE_DIR / "google-gemma-2-2b-it.jinja").read_text()
    return synthetic.write_llama(tmp_path_factory.mktemp("strict") / "strict.gguf", chat_template=template)


def test_server_chat_retries_a_refused_chat_normalised(strict_model):
    awkward = AWKWARD["system late"]
    with llamahost.Server(strict_model, n_ctx=512) as srv:
        raw = httpx.post(srv.url + "/v1/chat/completions", json={"messages": awkward, "max_tokens": 2}, timeout=60)
        assert raw.status_code >= 400  # HTTP clients of the server's own port get upstream's answer
        out = srv.chat(awkward, max_tokens=2)
        assert out["choices"][0]["message"]["role"] == "assistant"
        assert out["usage"]["prompt_tokens"] == srv.count_tokens(awkward)
        assert srv.count_tokens(awkward) == llamahost.count_tokens(strict_model, awkward).tokens
        chunks = list(srv.chat(awkward, max_tokens=2, stream=True))
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        with pytest.raises(llamahost.APIError):  # what normalising cannot fix still fails
            srv.chat(awkward, max_tokens="many")


def test_router_retries_a_refused_chat_normalised(strict_model):
    with llamahost.Pool(idle_ttl=None) as pool, pool.get(strict_model, n_ctx=512) as handle, \
            Router(pool, {"strict": handle}, port=0) as router:
        client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused")
        out = client.chat.completions.create(model="strict", messages=AWKWARD["two users"], max_tokens=2)
        assert out.choices[0].message.role == "assistant"
        assert out.usage.prompt_tokens == handle.count_tokens(AWKWARD["two users"])
