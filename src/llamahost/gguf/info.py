"""``inspect()``: what a GGUF model is, from its metadata alone (no weights loaded)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidModelError
from .reader import ArraySummary, GGUFHeader, read_header
from .tensors import TensorInfo

# llama_ftype (general.file_type) -> name
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}
SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str
    name: str
    n_layers: int
    n_ctx_train: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_expert: int
    n_vocab: int
    n_params: int
    file_type: str
    chat_template: str | None
    size_bytes: int
    sliding_window: int
    parts: tuple[Path, ...]
    metadata: dict[str, Any] = field(repr=False)
    tensors: tuple[TensorInfo, ...] = field(repr=False)


def split_parts(path: Path) -> list[Path]:
    """All files of a split GGUF (``name-00001-of-00003.gguf``), or just ``path``."""
    match = SPLIT_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    parts = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise InvalidModelError(path, f"split GGUF is missing {len(missing)} of its {count} parts: {', '.join(missing)}")
    return parts


def _arch_value(meta: dict, arch: str, key: str, default: Any = 0) -> Any:
    value = meta.get(f"{arch}.{key}", default)
    if isinstance(value, list):  # per-layer values
        return max(value) if value else default
    return value


def read_model(path: str | os.PathLike) -> list[GGUFHeader]:
    """The header of every file of a model (each part of a split GGUF), read and checked
    (``gguf.read_header``): what must hold before the engine opens any of them."""
    return [read_header(p) for p in split_parts(Path(path))]


def inspect(path: str | os.PathLike) -> ModelInfo:
    """Read a model's metadata without loading weights; split GGUFs read as one model."""
    headers = read_model(path)
    parts = [h.path for h in headers]
    meta = dict(headers[0].metadata)
    tensors = tuple(t for h in headers for t in h.tensors)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise InvalidModelError(parts[0], "metadata general.architecture is missing")
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = tokens.length if isinstance(tokens, ArraySummary) else _arch_value(meta, arch, "vocab_size")
    n_params = 0
    for t in tensors:
        count = 1
        for d in t.shape:
            count *= d
        n_params += count
    ftype = meta.get("general.file_type")
    n_head = _arch_value(meta, arch, "attention.head_count")
    return ModelInfo(
        path=parts[0],
        architecture=arch,
        name=meta.get("general.name", parts[0].stem),
        n_layers=_arch_value(meta, arch, "block_count"),
        n_ctx_train=_arch_value(meta, arch, "context_length"),
        n_embd=_arch_value(meta, arch, "embedding_length"),
        n_head=n_head,
        n_head_kv=_arch_value(meta, arch, "attention.head_count_kv", n_head),
        n_expert=_arch_value(meta, arch, "expert_count"),
        n_vocab=n_vocab,
        n_params=n_params,
        file_type=FILE_TYPES.get(ftype, f"type {ftype}") if isinstance(ftype, int) else "unknown",
        chat_template=meta.get("tokenizer.chat_template"),
        size_bytes=sum(h.file_size for h in headers),
        sliding_window=_arch_value(meta, arch, "attention.sliding_window"),
        parts=tuple(parts),
        metadata=meta,
        tensors=tensors,
    )
