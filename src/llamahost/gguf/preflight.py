"""What llama.cpp assumes about a model, checked before the engine sees the file.

llama.cpp validates the GGUF format itself, but trusts a model's hyperparameters and
tensor types: a value it cannot use ends in a failed GGML_ASSERT (the process aborts)
or, for a tensor type with no kernel, a call through a null pointer (a segfault). These
checks mirror the cases general to every architecture, each found by
``tests/fuzz_gguf.py`` (docs/HARDENING.md lists them with reproducers), so such a file
raises ``InvalidModelError`` instead. ``gguf.read_header`` runs them on every file, and every
load reads every file of its model first (``modelinfo.read_model``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..core import _native
from ..errors import InvalidModelError
from .tensors import TensorInfo

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS (src/llama-hparams.h)
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
MAX_TOKENS = 1 << 24  # 16M: the largest vocabularies hold about 260k
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama_rope_scaling_type_from_string

# {arch}.<key> hyperparameters that are counts or sizes: unsigned integers, or per-layer arrays of them
COUNT_KEYS = re.compile(r"(block_count|context_length|embedding_length|feed_forward_length|head_count(_kv)?"
                        r"|key_length|value_length|expert_(count|used_count|group_count|group_used_count"
                        r"|feed_forward_length|shared_feed_forward_length|shared_count)|sliding_window"
                        r"|dimension_count|vocab_size|nextn_predict_layers)$")

# Architectures whose graphs assert that attention heads have one size for keys, values and the
# rotary embedding (GGML_ASSERT(n_embd_head == hparams.n_embd_head_k()) and, for the first set,
# GGML_ASSERT(n_embd_head == n_rot) in src/models/*.cpp). tests/test_preflight.py checks them
# against the vendored sources.
ROPE_IS_HEAD = frozenset((
    "apertus", "arcee", "arctic", "baichuan", "chameleon", "codeshell", "cogvlm", "cohere2moe", "dbrx", "deci",
    "deepseek", "dots1", "dream", "ernie4_5", "ernie4_5-moe", "exaone", "falcon", "granite", "granite_swa",
    "graniteswitch", "grok", "grovemoe", "hunyuan-moe", "hunyuan_vl", "hy_v3", "internlm2", "jais2", "llada",
    "llada-moe", "maincoder", "minimax-01", "minimax-m2", "mistral3", "nemotron", "olmo", "olmoe",
    "orion", "paddleocr", "pangu-embedded", "plamo", "pockettts", "qwen2", "qwen2moe", "qwen2vl", "qwen3",
    "qwen3moe", "qwen3vl", "qwen3vlmoe", "rnd1", "seed_oss", "smollm3", "starcoder2", "xverse"))
KEY_IS_VALUE = ROPE_IS_HEAD | frozenset((
    "afmoe", "bailingmoe2", "bert", "bitnet", "bloom", "chatglm", "cohere2", "command-r", "eurobert", "glm4",
    "glm4moe", "gpt2", "gptneox", "granitehybrid", "jais", "laguna", "minimax-m3", "modern-bert", "mpt", "muse-glimmer",
    "nanbeige", "nemotron_h", "neo-bert", "openelm", "phi2", "qwen", "qwen35", "qwen35moe", "refact", "spark2_5",
    "stablelm", "starcoder"))

# Types ggml only uses inside its dot products (no kernel multiplies or adds them): a weight of
# one of these makes the CPU backend call a null function pointer.
INTERNAL_TYPES = {"Q8_1", "Q8_K"}
FLOAT_TYPES = {"F32", "F16", "BF16"}
INTEGER_TENSOR_TYPES = {"I8", "I16", "I32", "I64"}
# Tensors the graphs add or multiply element-wise (ggml's binary operators take no quantized
# operand; llama-quantize never quantizes them), besides every 1-D tensor (norms, biases).
ELEMENTWISE = re.compile(r"^(position_embd|token_types)\.weight$")
# The matrix weights of attention and feed-forward blocks, as every transformer names them:
# matrix products need a type with a dot-product kernel (no integer types).
MATMUL = re.compile(r"^(output|blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(up|down|gate)(_exps|_shexp)?))\.weight$")
MATMUL_TYPES_EXCLUDED = INTEGER_TENSOR_TYPES | {"F64"} | INTERNAL_TYPES


def check(path: Path, metadata: dict[str, Any], tensors: list[TensorInfo]) -> None:
    """Raise InvalidModelError for hyperparameters or tensor types llama.cpp would crash on."""
    arch = metadata.get("general.architecture")
    if isinstance(arch, str):
        _check_counts(path, metadata, arch)
        _check_experts(path, metadata, arch)
        _check_rope_and_norms(path, metadata, arch)
        _check_head_sizes(path, metadata, arch)
    _check_tensor_types(path, tensors)


def check_vocabulary(path: Path, buf, pos: int, count: int) -> None:
    """The ``count`` token strings at ``pos`` must be distinct: llama.cpp's vocabulary loader
    asserts it (an empty token counts as the "[EMPTY_<index>]" it is renamed to)."""
    if count > MAX_TOKENS:
        raise InvalidModelError(path, f"metadata tokenizer.ggml.tokens: {count} tokens, more than any vocabulary "
                                      f"(at most {MAX_TOKENS})")
    index = _native.first_duplicate_gguf_string(buf, pos, count)
    if index >= 0:
        raise InvalidModelError(path, f"metadata tokenizer.ggml.tokens: token #{index} repeats an earlier token")


def _fail(path: Path, key: str, value: Any, why: str) -> InvalidModelError:
    return InvalidModelError(path, f"metadata {key} = {value!r}: {why}")


def _count(metadata: dict, key: str) -> int | None:
    """The largest value of a validated count (a per-layer array's maximum), or None if absent."""
    value = metadata.get(key)
    if value is None:
        return None
    return max(value, default=0) if isinstance(value, list) else value


def _check_counts(path: Path, metadata: dict, arch: str) -> None:
    prefix = arch + "."
    for key, value in metadata.items():
        if not key.startswith(prefix) or not COUNT_KEYS.search(key):
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
            raise _fail(path, key, value, "expected a count (an unsigned integer, or one per layer)")
    n_layer = _count(metadata, prefix + "block_count")
    if n_layer is not None and not 0 < n_layer <= MAX_LAYERS:
        raise _fail(path, prefix + "block_count", n_layer, f"llama.cpp supports 1 to {MAX_LAYERS} layers")
    nextn = _count(metadata, prefix + "nextn_predict_layers")
    if nextn is not None and n_layer is not None and nextn > n_layer:
        raise _fail(path, prefix + "nextn_predict_layers", nextn, f"more than the {n_layer} layers")
    n_ctx = _count(metadata, prefix + "context_length")
    if n_ctx is not None and not 0 < n_ctx < 1 << 31:
        raise _fail(path, prefix + "context_length", n_ctx, "llama.cpp takes 1 to 2**31 - 1 tokens of context")


def _check_experts(path: Path, metadata: dict, arch: str) -> None:
    """llama_model::load_hparams's assertions on the experts of a mixture-of-experts model."""
    prefix = arch + "."
    n_expert = _count(metadata, prefix + "expert_count") or 0
    n_used = _count(metadata, prefix + "expert_used_count") or 0
    groups = _count(metadata, prefix + "expert_group_count") or 0
    group_used = _count(metadata, prefix + "expert_group_used_count") or 0
    problem = None
    if n_expert > MAX_EXPERTS:
        problem = f"llama.cpp supports at most {MAX_EXPERTS} experts"
    elif n_used > n_expert:
        problem = f"{n_used} experts used per token, more than the {n_expert} experts"
    elif n_expert and not n_used:
        problem = "no expert is used per token"
    elif n_expert and groups >= n_expert:
        problem = f"{groups} expert groups for {n_expert} experts"
    elif n_expert and groups > 1 and (n_expert % groups or not 0 < group_used < groups):
        problem = f"{groups} expert groups ({group_used} used) do not divide {n_expert} experts"
    elif not n_expert and groups:
        problem = f"{groups} expert groups without experts"
    if problem:
        raise _fail(path, prefix + "expert_count", n_expert, problem)


def _check_rope_and_norms(path: Path, metadata: dict, arch: str) -> None:
    prefix = arch + "."
    scaling = metadata.get(prefix + "rope.scaling.type")
    if scaling is not None and scaling not in ROPE_SCALING_TYPES:
        raise _fail(path, prefix + "rope.scaling.type", scaling, f"expected one of {', '.join(ROPE_SCALING_TYPES)}")
    for key, value in metadata.items():
        if key.startswith(prefix) and key.endswith("epsilon"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise _fail(path, key, value, "a normalisation epsilon is a finite number >= 0")


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _check_head_sizes(path: Path, metadata: dict, arch: str) -> None:
    """Head sizes as llama_model::load_hparams derives them (layer 0's head count; key and value
    sizes n_embd / n_head unless given; the rotary size the key size unless given)."""
    if arch not in KEY_IS_VALUE:
        return
    prefix = arch + "."
    n_head = _first(metadata.get(prefix + "attention.head_count")) or 0
    n_embd = metadata.get(prefix + "embedding_length")
    if not n_head or not isinstance(n_embd, int):
        return
    head_k = metadata.get(prefix + "attention.key_length", n_embd // n_head)
    head_v = metadata.get(prefix + "attention.value_length", n_embd // n_head)
    n_rot = metadata.get(prefix + "rope.dimension_count", head_k)
    if head_k != head_v:
        raise _fail(path, prefix + "attention.key_length", head_k,
                    f"{arch} needs keys and values of one head size, and the values have {head_v}")
    if arch in ROPE_IS_HEAD and n_rot != head_v:
        raise _fail(path, prefix + "rope.dimension_count", n_rot, f"{arch} rotates whole heads of {head_v}")


def _check_tensor_types(path: Path, tensors: list[TensorInfo]) -> None:
    for t in tensors:
        problem = None
        if t.type in INTERNAL_TYPES:
            problem = "a type ggml uses only inside its dot products, never to store weights"
        elif (len(t.shape) == 1 or ELEMENTWISE.match(t.name)) and t.type not in FLOAT_TYPES | INTEGER_TENSOR_TYPES:
            problem = "the model adds or multiplies it element-wise, which needs F32, F16 or BF16"
        elif MATMUL.match(t.name) and t.type in MATMUL_TYPES_EXCLUDED:
            problem = "a matrix weight needs a float or quantized type"
        if problem:
            raise InvalidModelError(path, f"tensor {t.name!r} has type {t.type}: {problem}")
