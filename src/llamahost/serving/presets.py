"""Model presets in upstream's ``--models-preset`` INI format (common/preset.cpp), so a preset
saved here carries over to llama-server's router and back:

    [name]
    ctx-size = 8192
    n-gpu-layers = 99
    flash-attn = true

A section names a model; each key is a llama-server option's long name without its dashes.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Sequence

from ..core.config import llama_server_options

# where the server listens and what it answers to: the router's business, not the model's
NOT_IN_PRESETS = ("--host", "--port", "--alias")


def _options_by_arg() -> dict[str, tuple[dict, bool]]:
    """Each spelling of each option -> (the option, whether it is the positive form)."""
    found = {}
    for opt in llama_server_options():
        for arg in opt["args"]:
            found[arg] = (opt, True)
        for arg in opt["args_neg"]:
            found[arg] = (opt, False)
    return found


def options_of(args: Sequence[str]) -> dict[str, str]:
    """A llama-server command line as preset keys and values (the last of a repeated option wins)."""
    by_arg = _options_by_arg()
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        found = by_arg.get(args[i])
        if found is None:
            raise ValueError(f"{args[i]!r} is no llama-server option")
        opt, positive = found
        key = opt["args"][-1].lstrip("-")
        if opt["kind"] in ("flag", "bool"):
            value, i = ("true" if positive else "false"), i + 1
        elif opt["kind"] == "pair":
            raise ValueError(f"{args[i]} takes two values: presets hold options of one")
        else:
            if i + 1 >= len(args):
                raise ValueError(f"{args[i]} needs a value")
            value, i = args[i + 1], i + 2
        if opt["args"][-1] not in NOT_IN_PRESETS:
            out[key] = value
    return out


def to_ini(name: str, args: Sequence[str]) -> str:
    """One preset section, as upstream's ``common_preset::to_ini`` writes it (keys sorted)."""
    lines = [f"[{name}]"] + [f"{key} = {value.replace(chr(10), chr(92) + chr(10))}"
                             for key, value in sorted(options_of(args).items())]
    return "\n".join(lines) + "\n\n"


def args_of(options: dict[str, str]) -> list[str]:
    """Preset keys and values back to a llama-server command line (as upstream's ``to_args``)."""
    by_key = {opt["args"][-1].lstrip("-"): opt for opt in llama_server_options()}
    out: list[str] = []
    for key, value in options.items():
        opt = by_key.get(key)
        if opt is None:
            raise ValueError(f"preset key {key!r} is no llama-server option")
        if opt["kind"] in ("flag", "bool"):
            if value.strip().lower() in ("false", "0", "no", "off"):
                if opt["args_neg"]:
                    out.append(opt["args_neg"][-1])
            else:
                out.append(opt["args"][-1])
        else:
            out += [opt["args"][-1], value]
    return out


def read(path: str | os.PathLike) -> dict[str, list[str]]:
    """The presets of an INI file: model name -> llama-server command line ({} if no file)."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys as written
    if Path(path).exists():
        parser.read(path, encoding="utf-8")
    return {name: args_of(dict(parser[name])) for name in parser.sections()}


def save(path: str | os.PathLike, name: str, args: Sequence[str]) -> None:
    """Write (or replace) the preset of ``name`` in the INI file, keeping the others."""
    path = Path(path)
    sections = {n: to_ini(n, a) for n, a in read(path).items()}
    sections[name] = to_ini(name, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(sections.values()), encoding="utf-8")
    tmp.replace(path)
