"""``normalize_messages``: OpenAI chat messages rewritten into what a chat template accepts.

Many templates raise on message lists that OpenAI answers: two user messages in a row, a
system message that is not first (or at all), a conversation that opens with the assistant,
tool results without a matching call, tool-call ids of the wrong shape. The rewrite merges,
moves and folds messages, drops empty ones, and says what it changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

if TYPE_CHECKING:
    from ..core.transport import Chunks, Response, Transport

log = logging.getLogger("llamahost")

# the routes that render a chat request through the template
CHAT_ROUTES = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/chat/completions/input_tokens",
                         "/apply-template"})

Rule = Callable[[list[dict], Mapping[str, bool]], "tuple[list[dict], str | None]"]

# the user turn inserted before a conversation that opens with the assistant
OPENING_USER_TURN = "."
_TOOL_CALL_ID = re.compile(r"^[A-Za-z0-9]{9}$")  # the strictest shape a template demands (Mistral's)


class Normalized(NamedTuple):
    messages: list[dict]
    changes: list[str]  # what was rewritten, in words; empty when nothing was


def normalize_messages(messages: list[dict], template: Mapping[str, bool] | Any) -> Normalized:
    """``messages`` rewritten for ``template``: its capabilities as the server reports them
    (``props()["chat_template_caps"]``) or an object with a ``caps`` attribute (a ChatTemplate).
    The input is not modified. A list that is not made of messages is returned as it is."""
    caps = getattr(template, "caps", template)
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                 for m in messages):
        return Normalized(messages, [])
    out = copy.deepcopy(messages)
    changes = []
    for rule in _RULES:
        out, change = rule(out, caps)
        if change:
            changes.append(change)
    return Normalized(out, changes)


def send_normalized(client: "Transport", method: str, path: str, body: bytes) -> "tuple[Response, Chunks | None]":
    """``client._send``, and when the server refuses a chat request whose messages normalising
    changes, the normalised request instead (its answer if that one succeeds, else the first)."""
    response, chunks = client._send(method, path, body)
    if chunks is not None or response.ok or path.partition("?")[0] not in CHAT_ROUTES:
        return response, chunks
    try:
        request = json.loads(body)
        messages = request["messages"]
    except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: JSON nested too deep
        return response, None
    normalized = normalize_messages(messages, client.props().get("chat_template_caps", {}))
    if not normalized.changes:
        return response, None
    retry, retry_chunks = client._send(method, path, json.dumps(dict(request, messages=normalized.messages)).encode())
    if retry_chunks is None and not retry.ok:
        return response, None
    log.info("chat messages normalised for the model's template: %s", "; ".join(normalized.changes))
    return retry, retry_chunks


def tool_calls_text(calls: list[dict]) -> str:
    """Assistant tool calls as the JSON text a model without tool syntax writes for them:
    ``{"name": ..., "arguments": {...}}``, or a JSON array of those for several calls."""
    written = [{"name": c.get("function", {}).get("name"), "arguments": _arguments(c)} for c in calls]
    return json.dumps(written[0] if len(written) == 1 else written, ensure_ascii=False)


def tool_result_text(message: dict) -> str:
    """A tool message as the user-turn text a template without tool syntax can render."""
    name = message.get("name") or "a tool"
    return f"Result of {name}:\n{text_of(message.get('content'))}"


def tool_history_as_text(messages: list[dict]) -> list[dict]:
    """Assistant tool calls written into their content, tool results as user messages: a
    history a template without tool syntax renders in full."""
    out = []
    names = {c.get("id"): c.get("function", {}).get("name") for m in messages for c in m.get("tool_calls") or []
             if isinstance(c, dict)}
    for m in messages:
        if m.get("role") == "tool":
            out.append({"role": "user", "content": tool_result_text(dict(m, name=m.get("name") or
                                                                          names.get(m.get("tool_call_id"))))})
        elif m.get("tool_calls"):
            written = {k: v for k, v in m.items() if k != "tool_calls"}
            written["content"] = join_content(m.get("content") or "", tool_calls_text(m["tool_calls"]))
            out.append(written)
        else:
            out.append(m)
    return out


def text_of(content: Any) -> str:
    """A message content as text: a string, or the text of its parts."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _arguments(call: dict) -> Any:
    arguments = call.get("function", {}).get("arguments", {})
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _is_text_only(content: Any) -> bool:
    return isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content)


def _is_empty(message: dict) -> bool:
    content = message.get("content")
    if message.get("tool_calls") or message["role"] == "tool":
        return False
    if isinstance(content, list):
        return not content
    return content is None or (isinstance(content, str) and not content.strip())


def join_content(a: Any, b: Any) -> Any:
    """Two contents as one: text joined by a blank line, parts (images, audio) kept."""
    if isinstance(a, list) or isinstance(b, list):
        def parts(c: Any) -> list:
            return c if isinstance(c, list) else ([{"type": "text", "text": c}] if c else [])
        return parts(a) + [{"type": "text", "text": "\n\n"}] + parts(b)
    return "\n\n".join(t for t in (a, b) if t)


# -- the rules, in the order they apply ----------------------------------------------------------


def _developer_as_system(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    found = [m for m in messages if m["role"] == "developer"]
    for m in found:
        m["role"] = "system"
    return messages, "developer messages became system messages" if found else None


def _text_parts_joined(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    found = [m for m in messages if _is_text_only(m.get("content"))]
    for m in found:
        m["content"] = text_of(m["content"])
    return messages, "content given as text parts became plain text" if found else None


def _names_dropped(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    found = [m for m in messages if m["role"] != "tool" and "name" in m]
    for m in found:
        del m["name"]
    return messages, "name fields dropped" if found else None


def _tool_calls_paired(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    """Tool results answer the calls of the assistant turn just before them (by id, or else in
    order) and carry the called tool's name; call ids have nine alphanumeric characters. A tool
    result that answers no call becomes a user message."""
    out, orphans = [], 0
    renamed: dict[str, str] = {}
    pending: list[dict] = []  # calls of the last assistant turn not answered yet
    for m in messages:
        if m["role"] == "assistant":
            pending = [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]
            for call in pending:
                old = str(call.get("id", ""))
                if not _TOOL_CALL_ID.match(old):
                    call["id"] = renamed[old] = hashlib.sha1(old.encode()).hexdigest()[:9]
        elif m["role"] == "tool":
            if m.get("tool_call_id") is None:
                call = pending[0] if pending else None
            else:
                wanted = renamed.get(str(m["tool_call_id"]), m["tool_call_id"])
                call = next((c for c in pending if c.get("id") == wanted), None)
            if call is None:
                out.append({"role": "user", "content": tool_result_text(m)})
                orphans += 1
                continue
            pending.remove(call)
            m["tool_call_id"] = call["id"]
            m.setdefault("name", call.get("function", {}).get("name"))
        else:
            pending = []
        out.append(m)
    changes = []
    if renamed:
        changes.append("tool call ids rewritten to nine alphanumeric characters")
    if orphans:
        changes.append("tool results without a matching call became user messages")
    return out, "; ".join(changes) or None


def _tool_history_as_text(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    if caps.get("supports_tool_calls", True) or not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return messages, None
    return tool_history_as_text(messages), "tool calls and results written as text (the template has no tool syntax)"


def _tool_calls_split(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    """Without parallel tool calls, a turn of several calls becomes one turn per call, each
    followed by its result (the turn's text stays with the first)."""
    if caps.get("supports_parallel_tool_calls", True):
        return messages, None
    out: list[dict] = []
    placed: set = set()  # ids of the results moved behind their calls
    results = {m.get("tool_call_id"): m for m in messages if m["role"] == "tool"}
    for m in messages:
        calls = m.get("tool_calls") or []
        if m["role"] == "tool" and m.get("tool_call_id") in placed:
            continue
        if m["role"] != "assistant" or len(calls) < 2:
            out.append(m)
            continue
        for i, call in enumerate(calls):
            out.append(dict(m, content=m.get("content") if i == 0 else None, tool_calls=[call]))
            if call.get("id") in results:
                out.append(results[call["id"]])
                placed.add(call["id"])
    return out, "tool calls made in one turn split into one turn each" if len(out) > len(messages) else None


def _unanswered_tool_rounds_as_text(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    """A tool round (calls and results) that the next user message follows with no assistant
    answer between is written as text: strict templates want the assistant after tool results."""
    out, written = [], False
    i = 0
    while i < len(messages):
        m = messages[i]
        end = i + 1
        while m.get("tool_calls") and end < len(messages) and messages[end]["role"] == "tool":
            end += 1
        if m.get("tool_calls") and end > i + 1 and end < len(messages) and messages[end]["role"] == "user":
            out += tool_history_as_text(messages[i:end])
            written = True
        else:
            out += messages[i:end]
        i = end
    return out, "tool rounds that the user answered written as text" if written else None


def _empties_dropped(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    """Empty messages go, but for the last user message when no other is left (a chat is at
    least one user turn)."""
    kept = [m for m in messages if not _is_empty(m)]
    if not any(m["role"] == "user" for m in kept):
        last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
        kept += [last_user] if last_user is not None else []
    return kept, "empty messages dropped" if len(kept) < len(messages) else None


def _system_first(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    systems = [m for m in messages if m["role"] == "system"]
    if not systems or (len(systems) == 1 and messages[0] is systems[0]):
        return messages, None
    merged = systems[0]
    for m in systems[1:]:
        merged["content"] = join_content(merged.get("content"), m.get("content"))
    rest = [m for m in messages if m["role"] != "system"]
    return [merged] + rest, "system messages merged into one at the start" if len(systems) > 1 else \
        "system message moved to the start"


def _user_first(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    start = 1 if messages and messages[0]["role"] == "system" else 0
    if start < len(messages) and messages[start]["role"] == "assistant":
        messages.insert(start, {"role": "user", "content": OPENING_USER_TURN})
        return messages, f"a user turn {OPENING_USER_TURN!r} inserted before the opening assistant message"
    return messages, None


def _same_roles_merged(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    out: list[dict] = []
    merged = set()
    for m in messages:
        last = out[-1] if out else None
        if last is not None and m["role"] == last["role"] and m["role"] in ("user", "assistant"):
            last["content"] = join_content(last.get("content"), m.get("content"))
            if m.get("tool_calls"):
                last["tool_calls"] = (last.get("tool_calls") or []) + m["tool_calls"]
            merged.add(m["role"])
            continue
        out.append(m)
    return out, f"consecutive {' and '.join(sorted(merged))} messages merged" if merged else None


def _system_folded(messages: list[dict], caps: Mapping[str, bool]) -> tuple[list[dict], str | None]:
    """Without a system role, or without a user message, the system prompt goes to the user."""
    if not messages or messages[0]["role"] != "system":
        return messages, None
    first_user = next((m for m in messages if m["role"] == "user"), None)
    if first_user is None:
        messages[0]["role"] = "user"
        return messages, "the system message became the user message (there was none)"
    if caps.get("supports_system_role", True):
        return messages, None
    first_user["content"] = join_content(messages[0].get("content"), first_user.get("content"))
    return messages[1:], "system prompt folded into the first user message (the template has no system role)"


_RULES: tuple[Rule, ...] = (_developer_as_system, _text_parts_joined, _names_dropped, _tool_calls_paired,
                            _tool_history_as_text, _tool_calls_split, _unanswered_tool_rounds_as_text,
                            _empties_dropped, _system_first, _user_first, _same_roles_merged, _system_folded)
