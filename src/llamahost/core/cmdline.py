"""llama-server's command line, read as upstream's parser reads it, and options taken out of it.

``read(args)`` asks the engine: flags and ``LLAMA_ARG_*`` variables alike, with upstream's
defaults (the model, where the server listens, its API keys, the context's parameters).
``take_option`` removes an option the caller handles itself (the pool's ``--port``, the
router's ``--host``) before the rest goes to the engine.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from . import _native, rpc


def read(args: Sequence[str]) -> dict:
    """What upstream's parser makes of ``args``: ``model``, ``hosts``, ``api_keys``, ``n_ctx``,
    ``n_batch``, ``type_k``, ``cache_ram_mib``, ..., and ``rpc``: the RPC workers, or None
    (ValueError when it refuses them)."""
    workers, args = take_rpc([str(a) for a in args])
    return dict(json.loads(_native.load_params(args)), rpc=workers)


def take_rpc(args: Sequence[str]) -> tuple[list[str] | None, list[str]]:
    """The RPC workers a command line names (``--rpc``), each a checked host:port, and the
    command line without them: upstream's parser connects to the workers it reads (and ends the
    process where one does not answer), so what reads a command line in this process reads it
    without them."""
    if os.environ.get("LLAMA_ARG_RPC"):
        raise ValueError("LLAMA_ARG_RPC is set: name RPC workers with --rpc (or rpc=), which llamahost checks "
                         "before llama.cpp connects to them, not in the environment of a process it shares")
    value, rest = take_option(args, "--rpc")
    return (rpc.endpoints(value) if value is not None else None), rest


def take_option(flags: Sequence[str], name: str) -> tuple[str | None, list[str]]:
    """The value of option ``name`` (``name VALUE`` or ``name=VALUE``; the last one given)
    and the flags without it."""
    value, rest, i = None, [], 0
    while i < len(flags):
        if flags[i] == name and i + 1 < len(flags):
            value, i = flags[i + 1], i + 2
            continue
        if flags[i].startswith(name + "="):
            value = flags[i].split("=", 1)[1]
        else:
            rest.append(flags[i])
        i += 1
    return value, rest
