"""A closed-form memory estimate from GGUF metadata alone.

``estimate()`` falls back to this when the engine cannot read a model (an architecture
newer than this build, say). Weights come from the tensor table (plus the CPU's repacked
copies, which an mmapped load holds twice), the KV cache from the attention shape with
upstream's sizing rules (GQA, sliding-window layers, cache types, padding), and compute
buffers from a bound on the largest activations of one micro-batch. Every term is meant to
be at or above what llama.cpp allocates, never below.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..core import cmdline, config
from ..core.devices import system_info
from ..errors import InvalidModelError, ModelLoadError
from ..gguf.info import ModelInfo
from ..gguf.tensors import GGML_TYPES

CTX_PAD = 256  # llama.cpp pads context and sliding-window cache sizes to this

# Layers with a sliding window, per architecture, as llama.cpp's loaders set them:
# (pattern, dense_first) of llama_hparams::set_swa_pattern. A GGUF's own
# attention.sliding_window_pattern wins; unknown architectures count every layer as full.
SWA_PATTERNS = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "cohere2moe": (4, True), "llama4": (4, False), "exaone4": (4, False),
    "exaone-moe": (4, False), "olmo2": (4, False), "gpt-oss": (2, False), "afmoe": (4, False),
    "mellum": (4, False), "muse-glimmer": (4, False), "laguna": (4, True), "modern-bert": (3, True),
}
# Architectures llama.cpp creates no KV cache for (llama_model::create_memory)
NO_KV_CACHE = {
    "bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2", "jina-bert-v3", "eurobert",
    "modern-bert", "gemma-embedding", "wavtokenizer-dec", "dream", "llada", "llada-moe", "rnd1",
}
# Weight types the CPU backend repacks into interleaved copies, by the CPU feature that enables
# it (ggml_repack_get_optimal_repack_type, ggml-cpu/repack.cpp); any other CPU: all of them.
REPACK_X86 = {"AVX2": {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}, "AVX512": {"Q2_K"}}
REPACK_ANY = {"Q4_0", "Q4_K", "Q2_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"}
_MATMUL_WEIGHT = re.compile(r"^(blk\.\d+\.|output\.weight$)")


def load_params(model: str, params: dict) -> dict:
    """The context parameters a Server with these parameters would use (upstream's defaults)."""
    return cmdline.read(config.server_args(model, params))


def _pad(n: int, to: int = CTX_PAD) -> int:
    return (n + to - 1) // to * to


def _row_bytes(type_name: str, n: int) -> int:
    _, block, block_bytes = next(v for v in GGML_TYPES.values() if v[0] == type_name.upper())
    return -(-n // block) * block_bytes


def _meta(info: ModelInfo, key: str, default=None):
    return info.metadata.get(f"{info.architecture}.{key}", default)


def _per_layer(value, n_layers: int, default: int) -> list[int]:
    if value is None:
        return [default] * n_layers
    if isinstance(value, list):
        return [int(v) for v in value[:n_layers]] + [default] * (n_layers - len(value))
    return [int(value)] * n_layers


def sliding_layers(info: ModelInfo) -> list[bool]:
    """Which layers have a sliding-window cache, as llama.cpp decides it."""
    n = info.n_layers
    if not info.sliding_window:
        return [False] * n
    pattern = _meta(info, "attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return [bool(v) for v in pattern[:n]] + [False] * (n - len(pattern))
    default = SWA_PATTERNS.get(info.architecture)
    if default is None:
        return [False] * n  # unknown: every layer full, which can only overstate
    n_pattern, dense_first = default
    if isinstance(pattern, int):
        n_pattern = pattern
    if n_pattern == 0:
        return [True] * n
    if dense_first:
        return [il % n_pattern != 0 for il in range(n)]
    return [il % n_pattern < n_pattern - 1 for il in range(n)]


def cache_cells(info: ModelInfo, lp: dict) -> tuple[int, int, int]:
    """(streams, cells per stream of full-attention layers, of sliding-window layers), as
    llama_context and llama_kv_cache_iswa size them."""
    n_seq = lp["n_seq_max"]
    n_ctx = _pad(lp["n_ctx"] or info.n_ctx_train)
    if lp["kv_unified"]:
        streams, cells = 1, n_ctx
    else:
        streams, cells = n_seq, _pad(n_ctx // n_seq)
    swa_cells = cells if lp["swa_full"] else _pad(
        min(cells, info.sliding_window * (n_seq if lp["kv_unified"] else 1) + lp["n_ubatch"]))
    return streams, cells, swa_cells


def _has_kv_cache(info: ModelInfo) -> bool:
    return info.architecture not in NO_KV_CACHE and _meta(info, "attention.causal", True) is not False


def _head_dims(info: ModelInfo) -> tuple[int, int]:
    head_k = _meta(info, "attention.key_length", info.n_embd // max(info.n_head, 1))
    return head_k, _meta(info, "attention.value_length", head_k)


def kv_cache_bytes(info: ModelInfo, lp: dict) -> int:
    """llama_kv_cache(_iswa)'s size: cells per stream times each layer's K and V rows."""
    if not _has_kv_cache(info):
        return 0
    streams, cells, swa_cells = cache_cells(info, lp)
    head_k, head_v = _head_dims(info)
    heads_kv = _per_layer(_meta(info, "attention.head_count_kv"), info.n_layers, info.n_head)
    total = 0
    for swa, n_kv in zip(sliding_layers(info), heads_kv):
        row = _row_bytes(lp["type_k"], head_k * n_kv) + _row_bytes(lp["type_v"], head_v * n_kv)
        total += streams * (swa_cells if swa else cells) * row
    return total


def compute_bytes(info: ModelInfo, lp: dict) -> int:
    """A bound on the compute buffer of the graph llama.cpp reserves (one micro-batch of T
    tokens against the whole cache): the attention masks, the attention scores when flash
    attention is off, every activation of one layer as if all were alive at once, and the
    outputs. The real buffer reuses memory between these, so it is smaller."""
    n_ctx = _pad(lp["n_ctx"] or info.n_ctx_train)
    tokens = min(n_ctx, lp["n_ubatch"])
    flash = lp["flash_attn"] != "disabled"  # "auto" resolves to on for the CPU
    if _has_kv_cache(info):
        _, cells, swa_cells = cache_cells(info, lp)
        swa = sliding_layers(info)
        spans = ([cells] if not all(swa) else []) + ([swa_cells] if any(swa) else [])
    else:
        spans = [tokens]  # attention within the batch
    mask_bytes = sum(tokens * span * (2 if flash else 4) for span in spans)
    scores = 0 if flash else tokens * max(spans) * info.n_head * 4
    head_k, head_v = _head_dims(info)
    n_ff = max(_per_layer(_meta(info, "feed_forward_length"), info.n_layers, 0), default=0)
    n_used = _meta(info, "expert_used_count", 0)
    n_ff_expert = _meta(info, "expert_feed_forward_length", n_ff)
    n_ff_shared = _meta(info, "expert_shared_feed_forward_length", 0) * max(_meta(info, "expert_shared_count", 1), 1)
    per_token = (4 * (n_ff + n_used * n_ff_expert + n_ff_shared) + info.n_expert + 2 * info.n_embd
                 + info.n_head * head_k + info.n_head_kv * (head_k + head_v))
    outputs = min(lp["n_outputs_max"], tokens) * (info.n_embd if lp["embeddings"] else info.n_vocab)
    return mask_bytes + scores + 4 * (tokens * per_token + outputs)


def repacked_types() -> set[str]:
    features = system_info()["cpu_features"]
    if str(features.get("REPACK", "0")) != "1":
        return set()
    if not any(k.startswith(("AVX", "SSE")) for k in features):
        return REPACK_ANY
    return set().union(*(types for feature, types in REPACK_X86.items() if str(features.get(feature, "0")) == "1"))


def weight_bytes(info: ModelInfo, lp: dict) -> int:
    """The tensors, plus the repacked copies an mmapped load keeps beside the mapping."""
    total = sum(t.nbytes for t in info.tensors)
    if lp["mapped"]:
        repack = repacked_types()
        total += sum(t.nbytes for t in info.tensors
                     if t.type in repack and len(t.shape) >= 2 and t.shape[1] % 8 == 0
                     and _MATMUL_WEIGHT.match(t.name))
    return total


class HostBytes(NamedTuple):
    """What a load would hold on the host, by the closed form."""

    weights: int
    kv_cache: int
    compute: int
    n_ctx: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute


def closed_form(model: str, info: ModelInfo, params: dict) -> HostBytes:
    """The host's bytes from metadata alone (an upper bound of a load's)."""
    lp = load_params(model, params)
    if any(key.startswith(f"{info.architecture}.{part}") for key in info.metadata for part in ("ssm.", "wkv.", "rwkv")):
        raise ModelLoadError(model, f"no closed-form estimate for recurrent architecture {info.architecture!r}")
    if not info.n_layers:
        raise InvalidModelError(model, f"metadata {info.architecture}.block_count is missing: a model has layers")
    return HostBytes(weight_bytes(info, lp), kv_cache_bytes(info, lp), compute_bytes(info, lp),
                     _pad(lp["n_ctx"] or info.n_ctx_train))
