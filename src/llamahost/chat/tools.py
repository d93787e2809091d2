"""Tool calls for chat templates without tool syntax.

Where a model's template renders no tool definitions (its capabilities say
``supports_tools: false``), the tools are described in the system prompt, a grammar lets the
model answer only in plain text or with a JSON tool call ``{"name": ..., "arguments": {...}}``
naming a declared tool, and the answer comes back as OpenAI ``tool_calls`` (ids,
``finish_reason: "tool_calls"``), streamed as tool-call deltas. Templates with tool syntax
keep llama.cpp's native tool calling.
"""

from __future__ import annotations

import json
import re
import secrets
import weakref
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generator, Iterator

from ..core import _native
from ..errors import APIError
from .messages import join_content, tool_history_as_text

if TYPE_CHECKING:
    from ..core.transport import Transport

# request fields that constrain the output themselves: llama.cpp refuses them with tools too
CONSTRAINTS = ("grammar", "json_schema", "response_format")

_caps: "weakref.WeakKeyDictionary[Transport, dict]" = weakref.WeakKeyDictionary()


def template_caps(client: "Transport") -> dict:
    """The capabilities of the client's chat template, as its server reports them (kept per client)."""
    caps = _caps.get(client)
    if caps is None:
        caps = _caps[client] = client.props().get("chat_template_caps", {})
    return caps


def needs_emulation(client: "Transport", body: dict) -> bool:
    """Whether a chat request has tools that the client's template cannot describe natively."""
    return bool(body.get("tools")) and not template_caps(client).get("supports_tools", False)


def emulated_request(body: dict) -> tuple[dict, "Emulation"]:
    """The request to send instead of ``body`` (no tools: a system prompt, a grammar, the tool
    history as text), and the Emulation that turns its answer into tool calls."""
    tools = [t for t in body["tools"] if isinstance(t, dict) and t.get("type", "function") == "function"]
    if not all(isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str) for t in tools):
        raise _invalid("each tool needs a function with a name")
    choice = body.get("tool_choice", "auto")
    constraints = [k for k in CONSTRAINTS if body.get(k) and body[k] != {"type": "text"}]
    if constraints and choice != "none":
        raise _invalid(f"Cannot use custom grammar constraints with tools ({constraints[0]}).")
    request = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
    request["messages"] = tool_history_as_text(body["messages"])
    if choice == "none" or not tools:
        return request, Emulation(active=False)
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        tools = [t for t in tools if t.get("function", {}).get("name") == wanted]
        if not tools:
            raise _invalid(f"tool_choice names {wanted!r}, which is not among the tools")
    required = choice == "required" or isinstance(choice, dict)
    parallel = bool(body.get("parallel_tool_calls", False))
    request["messages"] = _with_system_prompt(request["messages"], tools_prompt(tools, required, parallel))
    request["grammar"] = tool_grammar(tools, required, parallel)
    return request, Emulation(active=True)


def _invalid(message: str) -> APIError:
    """The error the server gives a request it refuses (400)."""
    return APIError(400, {"code": 400, "type": "invalid_request_error", "message": message})


def tools_prompt(tools: list[dict], required: bool, parallel: bool) -> str:
    """The system prompt text that describes the tools and how to call them."""
    described = "\n".join(json.dumps({"name": t["function"]["name"], "description": t["function"].get("description", ""),
                                      "parameters": t["function"].get("parameters", {})}, ensure_ascii=False)
                          for t in tools)
    call = 'a JSON object {"name": <tool name>, "arguments": <its arguments as a JSON object>}'
    if parallel:
        call += ", or a JSON array of such objects to call several at once"
    how = (f"Answer by calling a tool: reply with only {call}." if required else
           f"To call a tool, reply with only {call}. Otherwise reply in plain text.")
    return f"You can call these tools:\n{described}\n\n{how}"


def tool_grammar(tools: list[dict], required: bool, parallel: bool) -> str:
    """GBNF: a tool call (the name one of ``tools``, the arguments their schema), or with
    ``required`` false also plain text, which cannot start with ``{`` or ``[``."""
    calls = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                               "arguments": t["function"].get("parameters") or {"type": "object"}},
              "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    schema: dict = calls[0] if len(calls) == 1 else {"oneOf": calls}
    if parallel:
        schema = {"anyOf": [schema, {"type": "array", "items": schema, "minItems": 1}]}
    rules = re.sub(r"^root ::=", "tool-call ::=", _native.schema_grammar(json.dumps(schema)), flags=re.M)
    if required:
        return rules + "root ::= tool-call\n"
    return rules + "root ::= tool-call | plain-text\nplain-text ::= [^{\\[ \\t\\r\\n] .*\n"


def _with_system_prompt(messages: list[dict], prompt: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        return [dict(messages[0], content=join_content(messages[0].get("content"), prompt))] + messages[1:]
    return [{"role": "system", "content": prompt}] + messages


# -- reading the answer ---------------------------------------------------------------------------


@dataclass
class _Call:
    name: str | None  # None until the name is complete
    arguments: str  # the arguments' JSON text so far
    complete: bool


_NAME = re.compile(r'"name"\s*:\s*("(?:[^"\\]|\\.)*")')
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*')


def _value_end(text: str, start: int) -> int | None:
    """The end of the JSON object or array opening at ``start``; None while it is incomplete."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def scan_calls(text: str) -> list[_Call]:
    """The tool calls in (a prefix of) the grammar's output: one object, or an array of them."""
    pos = len(text) - len(text.lstrip())
    if text[pos:pos + 1] == "[":
        pos += 1
    calls = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] != "{":
            return calls
        end = _value_end(text, pos)
        obj = text[pos:end]
        name = _NAME.search(obj)
        arguments = _ARGUMENTS.search(obj)
        args_text = ""
        if arguments is not None and arguments.end() < len(obj):
            args_end = _value_end(obj, arguments.end())
            args_text = obj[arguments.end():args_end]
        calls.append(_Call(json.loads(name.group(1)) if name else None, args_text, end is not None))
        if end is None:
            return calls
        pos = end


@dataclass
class Emulation:
    """Turns the answers to an emulated request into OpenAI tool calls."""

    active: bool
    ids: list[str] = field(default_factory=list)

    def _id(self, index: int) -> str:
        while len(self.ids) <= index:
            self.ids.append("call_" + secrets.token_hex(12))
        return self.ids[index]

    def response(self, out: dict) -> dict:
        """A chat response with the JSON tool call in its content turned into ``tool_calls``."""
        if not self.active:
            return out
        for choice in out.get("choices", []):
            message = choice.get("message", {})
            content = message.get("content") or ""
            if not content.lstrip().startswith(("{", "[")):
                continue
            calls = scan_calls(content)
            if not calls or not all(c.complete and c.name for c in calls):
                continue  # cut short (max_tokens): left as text, finish_reason "length"
            message["content"] = None
            message["tool_calls"] = [{"id": self._id(i), "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for i, c in enumerate(calls)]
            choice["finish_reason"] = "tool_calls"
        return out

    def chunks(self, chunks: Generator[dict, None, None]) -> Iterator[dict]:
        """A chat stream with the JSON tool call's content deltas turned into tool-call deltas."""
        with closing(chunks):  # leaving early ends the stream below, cancelling its generation
            yield from self._converted(chunks) if self.active else chunks

    def _converted(self, chunks: Iterator[dict]) -> Iterator[dict]:
        buffer, mode = "", None  # mode: None until the first visible character, then "text" or "call"
        sent: list[int] = []  # per call: arguments characters sent (-1: not even its name yet)
        for chunk in chunks:
            choices = chunk.get("choices") or []
            delta = choices[0].get("delta", {}) if choices else {}
            piece = delta.get("content")
            if piece and mode != "text":
                buffer += piece
                if mode is None and buffer.strip():
                    mode = "call" if buffer.lstrip()[0] in "{[" else "text"
                    if mode == "text":
                        delta["content"] = buffer
                if mode != "text":
                    del delta["content"]
                if mode == "call":
                    tool_deltas = self._tool_deltas(scan_calls(buffer), sent)
                    if tool_deltas:
                        delta["tool_calls"] = tool_deltas
            if choices and choices[0].get("finish_reason") == "stop" and mode == "call" and sent:
                choices[0]["finish_reason"] = "tool_calls"
            if choices and not delta and not choices[0].get("finish_reason"):
                continue  # a content delta withheld while the tool call's name is not complete
            yield chunk

    def _tool_deltas(self, calls: list[_Call], sent: list[int]) -> list[dict]:
        deltas = []
        for i, call in enumerate(calls):
            if call.name is None:
                break
            if i == len(sent):
                sent.append(0)
                deltas.append({"index": i, "id": self._id(i), "type": "function",
                               "function": {"name": call.name, "arguments": ""}})
            if len(call.arguments) > sent[i]:
                deltas.append({"index": i, "function": {"arguments": call.arguments[sent[i]:]}})
                sent[i] = len(call.arguments)
        return deltas
