"""Tiny GGUF models with random weights, written with the real ``gguf`` package.

They load in llama.cpp like any model (real tokenizers, copied from llama.cpp's
``models/ggml-vocab-*.gguf``), so tests can cover architectures no hub is needed for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import gguf

VOCAB_DIR = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models"
TEMPLATE_DIR = VOCAB_DIR / "templates"
UNQUANTIZED = ("position_embd.weight", "token_types.weight")


def copy_tokenizer(writer: gguf.GGUFWriter, vocab: str) -> int:
    """Copy the tokenizer.* metadata of ggml-vocab-<vocab>.gguf; returns the vocabulary size."""
    reader = gguf.GGUFReader(VOCAB_DIR / f"ggml-vocab-{vocab}.gguf")
    n_vocab = 0
    for name, fld in reader.fields.items():
        if not name.startswith("tokenizer.") or name == "tokenizer.chat_template":
            continue
        value = fld.contents()
        kind = fld.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, value)
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(name, value)
        else:
            writer.add_uint32(name, int(value))
    return n_vocab


def write_llama(path: Path, **kw) -> Path:
    """A llama-architecture model (GQA when n_head_kv < n_head)."""
    return write_model(path, "llama", **kw)


def write_model(path: Path, arch: str, *, vocab: str | None = None, n_layer: int = 2, n_embd: int = 128,
                n_head: int = 4, n_head_kv: int = 2, n_ff: int = 256, n_ctx_train: int = 4096,
                n_expert: int = 4, n_expert_used: int = 2, chat_template: str | None = None, reranker: bool = False,
                weight_type: str = "F32", split_max_tensors: int = 0, seed: int = 0,
                shared_weights: bool = False) -> Path:
    """A model of one of the architectures llama, qwen3, qwen3moe (MoE) or bert (embeddings;
    with ``reranker`` a classifier head and rank pooling). ``weight_type`` (F32, F16, Q8_0,
    Q4_0, ...) quantizes the matrices; ``split_max_tensors`` writes a split GGUF
    (``name-00001-of-0000N.gguf``, the first part returned). ``shared_weights``: the matrices of
    one shape share one random draw, drawn and quantized once, so that a model of a billion
    parameters is written in seconds (for measuring memory and speed, which the values leave alone)."""
    rng = np.random.default_rng(seed)
    drawn: dict[tuple[int, ...], np.ndarray] = {}
    quantized: dict[int, np.ndarray] = {}  # id of a shared draw -> its quantized bytes
    writer = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    writer.add_name(f"synthetic-{arch}")
    writer.add_block_count(n_layer)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    qtype = gguf.GGMLQuantizationType[weight_type]
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if weight_type == "F32" else gguf.LlamaFileType[f"MOSTLY_{weight_type}"])
    if arch == "bert":
        n_head_kv = n_head
        writer.add_layer_norm_eps(1e-12)
        writer.add_causal_attention(False)
        writer.add_pooling_type(gguf.PoolingType.RANK if reranker else gguf.PoolingType.MEAN)
    else:
        writer.add_head_count_kv(n_head_kv)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_rope_dimension_count(n_embd // n_head)
    if arch == "qwen3moe":
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
        writer.add_expert_feed_forward_length(n_ff)
    n_vocab = copy_tokenizer(writer, vocab or {"bert": "bert-bge", "llama": "llama-spm"}.get(arch, "qwen2"))
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def weight(*shape: int) -> np.ndarray:
        if shared_weights and shape in drawn:
            return drawn[shape]
        data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if shared_weights:
            drawn[shape] = data
        return data

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    def packed(data: np.ndarray) -> np.ndarray:
        if not shared_weights:
            return gguf.quants.quantize(data, qtype)
        if id(data) not in quantized:  # a shared draw lives on in ``drawn``: its id stays its own
            quantized[id(data)] = gguf.quants.quantize(data, qtype)
        return quantized[id(data)]

    def add(name: str, data: np.ndarray) -> None:
        # norms, biases and the embeddings that are added rather than multiplied stay F32, as llama-quantize keeps them
        if data.ndim >= 2 and qtype != gguf.GGMLQuantizationType.F32 and name not in UNQUANTIZED:
            writer.add_tensor(name, packed(data), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)

    head_dim = n_embd // n_head
    add("token_embd.weight", weight(n_vocab, n_embd))
    if arch == "bert":
        add("token_types.weight", weight(2, n_embd))
        add("position_embd.weight", weight(n_ctx_train, n_embd))
        add("token_embd_norm.weight", ones(n_embd))
        add("token_embd_norm.bias", zeros(n_embd))
        if reranker:
            add("cls.weight", weight(n_embd, n_embd))
            add("cls.bias", zeros(n_embd))
            add("cls.output.weight", weight(1, n_embd))
            add("cls.output.bias", zeros(1))
    else:
        add("output_norm.weight", ones(n_embd))
    for i in range(n_layer):
        b = f"blk.{i}"
        add(f"{b}.attn_q.weight", weight(n_head * head_dim, n_embd))
        add(f"{b}.attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        add(f"{b}.attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        add(f"{b}.attn_output.weight", weight(n_embd, n_head * head_dim))
        if arch == "bert":
            for name, n in (("attn_q", n_embd), ("attn_k", n_embd), ("attn_v", n_embd), ("attn_output", n_embd),
                            ("ffn_up", n_ff), ("ffn_down", n_embd)):
                add(f"{b}.{name}.bias", zeros(n))
            add(f"{b}.attn_output_norm.weight", ones(n_embd))
            add(f"{b}.attn_output_norm.bias", zeros(n_embd))
            add(f"{b}.ffn_up.weight", weight(n_ff, n_embd))
            add(f"{b}.ffn_down.weight", weight(n_embd, n_ff))
            add(f"{b}.layer_output_norm.weight", ones(n_embd))
            add(f"{b}.layer_output_norm.bias", zeros(n_embd))
            continue
        add(f"{b}.attn_norm.weight", ones(n_embd))
        add(f"{b}.ffn_norm.weight", ones(n_embd))
        if arch in ("qwen3", "qwen3moe"):
            add(f"{b}.attn_q_norm.weight", ones(head_dim))
            add(f"{b}.attn_k_norm.weight", ones(head_dim))
        if arch == "qwen3moe":
            add(f"{b}.ffn_gate_inp.weight", weight(n_expert, n_embd))
            add(f"{b}.ffn_gate_exps.weight", weight(n_expert, n_ff, n_embd))
            add(f"{b}.ffn_up_exps.weight", weight(n_expert, n_ff, n_embd))
            add(f"{b}.ffn_down_exps.weight", weight(n_expert, n_embd, n_ff))
        else:
            add(f"{b}.ffn_gate.weight", weight(n_ff, n_embd))
            add(f"{b}.ffn_up.weight", weight(n_ff, n_embd))
            add(f"{b}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path if len(writer.tensors) == 1 else path.with_name(f"{path.stem}-00001-of-{len(writer.tensors):05d}.gguf")


def write_projector(path: Path, n_embd: int = 256, n_tensors: int = 4, seed: int = 0) -> Path:
    """A GGUF shaped like a multimodal projector (``clip`` architecture, F16 weights): for what
    reads its header and tensor table (estimates); no engine can run it."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("synthetic-projector")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for i in range(n_tensors):
        writer.add_tensor(f"v.blk.{i}.attn_q.weight", (rng.standard_normal((n_embd, n_embd)) * 0.02).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_lora(path: Path, n_layer: int = 2, n_embd: int = 128, n_head: int = 4, n_head_kv: int = 2,
               rank: int = 8, seed: int = 0) -> Path:
    """A LoRA adapter for the llama models of ``write_llama`` with the same shape (on the
    attention's q and v weights), as llama.cpp loads it with ``--lora``."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    head_dim = n_embd // n_head
    for i in range(n_layer):
        for name, n_out in (("attn_q", n_head * head_dim), ("attn_v", n_head_kv * head_dim)):
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_a", (rng.standard_normal((rank, n_embd)) * 0.02).astype(np.float32))
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_b", np.zeros((n_out, rank), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
