"""Python keyword arguments and ``LLAMAHOST_*`` variables -> llama-server's command line.

llama.cpp's own parser (``common_params_parse``) fills the engine's parameters, so every
llama-server option works with upstream's defaults and validation. This module only
checks the Python side (names and types) and spells the arguments.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

from . import _native

ENV_PREFIX = "LLAMAHOST_"


def _int(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return str(value)


def _float(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return str(value)


def _str(name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return os.fspath(value)


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def convert(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value
    return convert


def _numbers(name: str, value: Any) -> str:
    """A list of numbers, spelled as llama.cpp's comma-separated lists (``--tensor-split 3,1``)."""
    if (not isinstance(value, (list, tuple))
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in value)):
        raise ValueError(f"{name} must be a list of numbers >= 0, got {value!r}")
    return ",".join(str(v) for v in value)


def _layers(name: str, value: Any) -> str:
    if value in ("auto", "all"):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a layer count >= 0, 'auto' or 'all'; got {value!r}")
    return str(value)


def _on_off_auto(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return _choice("on", "off", "auto")(name, value)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a text such as ``"8GiB"``, ``"512M"`` or ``"1.5 GB"`` (units of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
    try:
        size = float(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        size = -1
    if size < 0 or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size: expected a number of bytes or a text such as 8GiB or 512MiB")
    return int(size)


CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")  # llama.cpp's KV cache types


@dataclass(frozen=True)
class Param:
    """One documented parameter: its llama-server flag and how a Python value is spelled."""

    name: str
    flag: str
    convert: Callable[[str, Any], str] | None  # None: a boolean switch
    help: str
    negative: str | None = None  # the switch's --no-... form

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


PARAMS: tuple[Param, ...] = (
    Param("n_ctx", "--ctx-size", _int, "context size in tokens; 0 = the trained context, or as much as fits in memory"),
    Param("n_batch", "--batch-size", _int, "logical batch size for prompt processing"),
    Param("n_ubatch", "--ubatch-size", _int, "physical batch size"),
    Param("parallel", "--parallel", _int, "number of slots (concurrent requests)"),
    Param("threads", "--threads", _int, "CPU threads for generation"),
    Param("threads_batch", "--threads-batch", _int, "CPU threads for prompt processing"),
    Param("n_gpu_layers", "--n-gpu-layers", _layers, "layers offloaded to GPUs: a number, 'auto' or 'all'"),
    Param("tensor_split", "--tensor-split", _numbers, "share of the offloaded layers per GPU, e.g. [3, 1]"),
    Param("cache_type_k", "--cache-type-k", _choice(*CACHE_TYPES), "KV cache type for K"),
    Param("cache_type_v", "--cache-type-v", _choice(*CACHE_TYPES), "KV cache type for V"),
    Param("flash_attn", "--flash-attn", _on_off_auto, "flash attention: on, off, auto (or a bool)"),
    Param("embedding", "--embedding", None, "serve embeddings only (embedding models)"),
    Param("pooling", "--pooling", _choice("none", "mean", "cls", "last", "rank"), "embedding pooling"),
    Param("reranking", "--reranking", None, "serve the rerank endpoint (reranker models)"),
    Param("chat_template", "--chat-template", _str, "a built-in template name or a Jinja template text"),
    Param("chat_template_file", "--chat-template-file", _str, "a Jinja chat template file"),
    Param("jinja", "--jinja", None, "use the model's Jinja chat template (tool calls)", "--no-jinja"),
    Param("seed", "--seed", _int, "RNG seed (-1 = random)"),
    Param("mmproj", "--mmproj", _str, "multimodal projector GGUF"),
    Param("lora", "--lora", _str, "LoRA adapter GGUF (a path or a list of paths)"),
    Param("alias", "--alias", _str, "model name reported by /v1/models"),
    Param("api_key", "--api-key", _str, "require this key (Authorization: Bearer) over HTTP"),
    Param("host", "--host", _str, "address to listen on (default 127.0.0.1)"),
    Param("port", "--port", _int, "port to listen on (0 = a free port)"),
    Param("metrics", "--metrics", None, "enable the Prometheus /metrics route"),
    Param("slot_save_path", "--slot-save-path", _str, "directory for slot save/restore"),
    Param("cache_ram", "--cache-ram", _int, "prompt cache size in MiB (-1 = no limit, 0 = off)"),
    Param("verbosity", "--log-verbosity", _int, "log threshold: 0 output, 1 error, 2 warning, 3 info, 4 trace"),
)
PARAMS_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}

# What the Python API does differently from llama-server's own defaults, and why:
# a library should pick a free loopback port and not flood the host application's stderr.
PYTHON_DEFAULTS: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "verbosity": 2}

@lru_cache(maxsize=1)
def llama_server_options() -> tuple[dict, ...]:
    """llama-server's options exactly as upstream's parser defines them."""
    return tuple(json.loads(_native.options()))


@lru_cache(maxsize=1)
def exiting_options() -> frozenset[str]:
    """The names of the options that llama-server answers by printing and exiting (--help,
    --version, --list-devices, ...): the engine refuses them, read from upstream's own table."""
    return frozenset(name for opt in llama_server_options() if opt["exits"] for name in opt["args"])


def _option_for(name: str) -> tuple[dict, bool] | None:
    """The llama-server option spelled ``--name-with-dashes`` (or ``--no-...``), if any."""
    flag = "--" + name.replace("_", "-")
    for opt in llama_server_options():
        if flag in opt["args"]:
            return opt, True
        if flag in opt["args_neg"]:
            return opt, False
    return None


def _switch(name: str, value: Any, on: str, off: str | None) -> list[str]:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    if value:
        return [on]
    return [off] if off else []


def _spell(name: str, value: Any) -> list[str]:
    param = PARAMS_BY_NAME.get(name)
    if param is not None:
        if param.convert is None:
            return _switch(name, value, param.flag, param.negative)
        values = value if name == "lora" and isinstance(value, (list, tuple)) else [value]
        out: list[str] = []
        for v in values:
            out += [param.flag, param.convert(name, v)]
        return out
    found = _option_for(name)
    if found is None:
        raise ValueError(f"unknown parameter {name!r}: not a llamahost parameter nor a llama-server option "
                         f"--{name.replace('_', '-')} (see `llamahost serve --help`)")
    opt, positive = found
    flag = "--" + name.replace("_", "-")  # as the caller spelled it: one of the option's own names
    if not positive:
        return _switch(name, value, flag, None)
    if opt["kind"] in ("flag", "bool"):
        return _switch(name, value, flag, opt["args_neg"][-1] if opt["args_neg"] else None)
    if opt["kind"] == "int":
        return [flag, _int(name, value)]
    if opt["kind"] == "pair":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{name} takes two values, got {value!r}")
        return [flag, _str(name, value[0]), _str(name, value[1])]
    if isinstance(value, bool):
        raise ValueError(f"{name} takes a value ({opt['value_hint'] or 'string'}), got {value!r}")
    if isinstance(value, (int, float)):
        return [flag, str(value)]
    if isinstance(value, (list, tuple)):  # llama.cpp's list-valued options are comma-separated
        return [flag, ",".join(_str(name, v) if not isinstance(v, (int, float)) else str(v) for v in value)]
    return [flag, _str(name, value)]


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Documented parameters given as LLAMAHOST_<NAME> variables, converted to Python values."""
    out: dict[str, Any] = {}
    for param in PARAMS:
        raw = environ.get(param.env)
        if raw is None or raw == "":
            continue
        if param.convert is None:
            low = raw.strip().lower()
            if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"{param.env}={raw!r}: expected 1/0, true/false, yes/no or on/off")
            out[param.name] = low in ("1", "true", "yes", "on")
        elif param.convert in (_int, _layers) and raw.lstrip("-").isdigit():
            out[param.name] = int(raw)
        elif param.convert is _int:
            raise ValueError(f"{param.env}={raw!r}: expected an integer")
        elif param.convert is _numbers:
            try:
                out[param.name] = [float(v) for v in raw.split(",")]
            except ValueError:
                raise ValueError(f"{param.env}={raw!r}: expected numbers separated by commas") from None
        else:
            out[param.name] = raw
    return out


def server_args(model: str, params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[str]:
    """llama-server arguments for ``model`` with ``params`` over LLAMAHOST_* over our defaults."""
    merged: dict[str, Any] = dict(PYTHON_DEFAULTS)
    merged.update(_from_env(os.environ if environ is None else environ))
    merged.update(params)
    return ["--model", model] + flags(merged)


def flags(params: Mapping[str, Any]) -> list[str]:
    """llama-server's flags for ``params`` alone (no model, no defaults); None or an empty list
    leaves a parameter out."""
    out: list[str] = []
    for name, value in params.items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        out += _spell(name, value)
    return out

