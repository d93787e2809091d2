"""The files the GGUF fuzzer found llama.cpp crashing on (docs/HARDENING.md), each as a minimal
reproducer: the engine, handed the file directly, dies (in a subprocess); llamahost refuses
it first with InvalidModelError naming the field. And the architecture lists preflight.py
keeps, checked against the vendored llama.cpp sources."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np
import pytest

import llamahost
import synthetic
from llamahost.gguf import preflight

LLAMA_SRC = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "src"
SMALL = dict(n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=256)


def rewrite(src: Path, dst: Path, metadata: dict | None = None, tensor_types: dict | None = None,
            split_max_tensors: int = 0) -> Path:
    """A copy of a GGUF with some metadata values replaced (same value type) or added (strings),
    and some tensors stored as another type (their bytes random: the engine crashes first);
    with ``split_max_tensors``, a split GGUF (its first part returned)."""
    metadata, tensor_types = metadata or {}, tensor_types or {}
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents(),
                             split_max_tensors=split_max_tensors)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = metadata.get(name, field.contents())
        writer.add_key_value(name, value, field.types[0], field.types[-1] if len(field.types) > 1 else None)
    for name in metadata.keys() - reader.fields.keys():  # a key the source lacks: a string
        writer.add_string(name, metadata[name])
    rng = np.random.default_rng(0)
    for t in reader.tensors:
        if t.name in tensor_types:
            kind = gguf.GGMLQuantizationType[tensor_types[t.name]]
            block, size = gguf.GGML_QUANT_SIZES[kind]
            shape = [int(d) for d in reversed(t.shape.tolist())]
            byte_shape = shape[:-1] + [shape[-1] // block * size]  # what the writer takes for a quantized type
            writer.add_tensor(t.name, rng.integers(0, 255, byte_shape, dtype=np.uint8), raw_shape=byte_shape,
                              raw_dtype=kind)
        else:
            writer.add_tensor(t.name, t.data, raw_shape=[int(d) for d in reversed(t.shape.tolist())],
                              raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst.with_name(f"{dst.stem}-00001-of-{len(writer.tensors):05d}.gguf") if split_max_tensors else dst


ENGINE_ALONE = textwrap.dedent("""
    import sys
    from llamahost.core import _native
    engine = _native.Engine(["-m", sys.argv[1], "-c", "256", "-np", "1", "-t", "1", "--port", "0"])
    engine.start()
    status, _, _, body, _ = engine.call("POST", "/completion", b'{"prompt": "Hi", "n_predict": 2}')
    print(status, body[:200])
    engine.stop()
""")


def engine_alone(path: Path) -> subprocess.CompletedProcess:
    """The engine with the file, no llamahost check before it, in a process of its own."""
    return subprocess.run([sys.executable, "-c", ENGINE_ALONE, str(path)], capture_output=True, text=True,
                          timeout=120, env={"GGML_NO_BACKTRACE": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("preflight")
    return {
        "llama": synthetic.write_model(folder / "llama.gguf", "llama", vocab="phi-3", **SMALL),
        "llama-256": synthetic.write_model(folder / "llama-256.gguf", "llama", vocab="phi-3", **dict(SMALL, n_embd=256)),
        "qwen3moe": synthetic.write_model(folder / "qwen3moe.gguf", "qwen3moe", vocab="gpt-2", **SMALL),
        "bert": synthetic.write_model(folder / "bert.gguf", "bert", **SMALL),
    }


REPRODUCERS = {
    # name: (seed model, metadata changes, tensor types, what llamahost says, what kills the engine)
    "a quantized tensor the graph adds": ("bert", {}, {"token_types.weight": "Q8_0"}, "token_types.weight",
                                          "binary_op: unsupported types"),
    "a norm stored quantized": ("llama", {}, {"output_norm.weight": "Q8_0"}, "output_norm.weight",
                                "unsupported types"),
    "a weight of a dot-product-only type": ("llama-256", {}, {"blk.0.ffn_up.weight": "Q8_K"}, "blk.0.ffn_up.weight",
                                            None),  # a segfault: no message
    "no layers": ("llama", {"llama.block_count": 0}, {}, "llama.block_count", "n_layer_all > 0"),
    "more layers than llama.cpp's limit": ("llama", {"llama.block_count": 1000}, {}, "llama.block_count",
                                           "n_layer_all > 0"),
    "more experts used than exist": ("qwen3moe", {"qwen3moe.expert_used_count": 13}, {}, "expert",
                                     "n_expert_used_max <= hparams.n_expert"),
    "a negative norm epsilon": ("llama", {"llama.attention.layer_norm_rms_epsilon": -1.0}, {}, "epsilon",
                                "eps >= 0.0f"),
    "a context of no tokens": ("llama", {"llama.context_length": 0}, {}, "llama.context_length",
                               "n_ctx > 0 && n_prompt_tokens > 0"),
    "a context past 2**31 tokens": ("llama", {"llama.context_length": 2**31}, {}, "llama.context_length",
                                    "n_ctx > 0 && n_prompt_tokens > 0"),
    "a rotary size other than the head's": ("qwen3moe", {"qwen3moe.rope.dimension_count": 8}, {},
                                            "qwen3moe.rope.dimension_count", "n_embd_head == n_rot"),
    "an unknown rope scaling": ("llama", {"llama.rope.scaling.type": "sideways"}, {}, "llama.rope.scaling.type",
                                "rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED"),
}


@pytest.fixture(scope="module")
def reproducers(models, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each reproducer's file, and how the engine alone ended on it (run side by side)."""
    folder = tmp_path_factory.mktemp("reproducers")
    paths = {name: rewrite(models[seed], folder / f"{i}.gguf", metadata, types)
             for i, (name, (seed, metadata, types, _, _)) in enumerate(REPRODUCERS.items())}
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(paths, ((p, died) for p, died in zip(paths.values(), pool.map(engine_alone, paths.values())))))


@pytest.mark.parametrize("name", REPRODUCERS)
def test_a_file_that_crashes_the_engine_is_refused_first(reproducers, name):
    path, died = reproducers[name]
    *_, says, crash = REPRODUCERS[name]
    assert died.returncode < 0, f"the engine survived ({died.returncode}): {died.stdout[-300:]} {died.stderr[-500:]}"
    if crash:
        assert crash in died.stderr
    with pytest.raises(llamahost.InvalidModelError, match=re.escape(says)):
        llamahost.inspect(path)
    with pytest.raises(llamahost.InvalidModelError, match=re.escape(says)):
        llamahost.Server(path, n_ctx=256)


def test_a_damaged_later_part_of_a_split_model_is_refused_on_every_path(models, tmp_path):
    """The first part is sound; the second holds a weight of a type the engine segfaults on."""
    tensors = gguf.GGUFReader(models["llama-256"]).tensors
    damaged = "blk.0.ffn_up.weight"  # 256 wide, as Q8_K's blocks
    assert [t.name for t in tensors[-2:]] == [damaged, "blk.0.ffn_down.weight"]
    first = rewrite(models["llama-256"], tmp_path / "split.gguf", tensor_types={damaged: "Q8_K"},
                    split_max_tensors=len(tensors) - 2)
    second = first.with_name("split-00002-of-00002.gguf")
    assert second.exists()
    died = engine_alone(first)
    assert died.returncode < 0, f"the engine survived ({died.returncode}): {died.stderr[-500:]}"
    says = re.escape(second.name) + ".*" + re.escape(damaged)
    for load in (lambda: llamahost.inspect(first), lambda: llamahost.Server(first, n_ctx=256),
                 lambda: llamahost.Server.from_args(["-m", str(first), "-c", "256"]),
                 lambda: llamahost.estimate(first, n_ctx=256), lambda: llamahost.count_tokens(first, "hi")):
        with pytest.raises(llamahost.InvalidModelError, match=says):
            load()
    with llamahost.Pool(memory_budget="1GiB") as pool, pytest.raises(llamahost.InvalidModelError, match=says):
        pool.get(first, n_ctx=256)
    cli = subprocess.run([sys.executable, "-m", "llamahost", "serve", str(first), "-c", "256", "--port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and re.search(says, cli.stderr), cli.stderr[-500:]


def test_a_later_parts_split_number_of_another_type_is_refused(models, tmp_path):
    """The fuzzer's finding: llama.cpp reads a later part's split.no as a uint16 without checking
    its type (GGML_ASSERT in gguf.cpp); an int16 there ended the process."""
    first = rewrite(models["llama-256"], tmp_path / "split.gguf", split_max_tensors=4)
    second = first.with_name(first.name.replace("-00001-of-", "-00002-of-"))
    data = bytearray(second.read_bytes())
    at = data.index(b"split.no") + len(b"split.no")
    assert data[at:at + 4] == (2).to_bytes(4, "little")  # GGUF_TYPE_UINT16
    data[at:at + 4] = (3).to_bytes(4, "little")  # GGUF_TYPE_INT16: the same two bytes of value
    second.write_bytes(bytes(data))
    died = engine_alone(first)
    assert died.returncode < 0, f"the engine survived ({died.returncode}): {died.stderr[-500:]}"
    for load in (lambda: llamahost.inspect(first), lambda: llamahost.estimate(first, n_ctx=256)):
        with pytest.raises(llamahost.InvalidModelError, match=re.escape(second.name) + ".*split.no.*int16"):
            load()


def test_a_vocabulary_with_a_repeated_token(models, tmp_path):
    reader = gguf.GGUFReader(models["llama"])
    tokens = reader.fields["tokenizer.ggml.tokens"]
    data = bytearray(models["llama"].read_bytes())
    # token 301's bytes become token 300's (same length): the vocabulary now holds one twice
    first, second = tokens.data[300], tokens.data[301]
    length = lambda i: tokens.parts[i].nbytes
    while length(first) != length(second):
        second += 2
    start = lambda i: tokens.offset + sum(p.nbytes for p in tokens.parts[:i])
    data[start(second):start(second) + length(second)] = data[start(first):start(first) + length(first)]
    path = tmp_path / "repeated.gguf"
    path.write_bytes(bytes(data))
    died = engine_alone(path)
    assert died.returncode < 0 and "id_to_token.size() == token_to_id.size()" in died.stderr
    with pytest.raises(llamahost.InvalidModelError, match="repeats an earlier token"):
        llamahost.Server(path, n_ctx=256)


def _graph_asserts() -> dict[str, tuple[bool, bool]]:
    """Per architecture name: whether its graph asserts keys and values of one head size, and
    rotary embeddings of the whole head (src/models/*.cpp, mapped through llama-model.cpp and
    llama-arch.cpp)."""
    names = dict(re.findall(r"\{\s*(LLM_ARCH_\w+),\s*\"([^\"]+)\"\s*\}", (LLAMA_SRC / "llama-arch.cpp").read_text()))
    classes = dict(re.findall(r"case (LLM_ARCH_\w+):\s*return new (\w+)\(", (LLAMA_SRC / "llama-model.cpp").read_text()))
    graphs = {}
    for source in (LLAMA_SRC / "models").glob("*.cpp"):
        text = source.read_text()
        for match in re.finditer(r"(llama_model_\w+)::graph::graph\(", text):
            body = text[match.end():text.find("\n}\n", match.end())]
            graphs[match.group(1)] = ("GGML_ASSERT(n_embd_head == hparams.n_embd_head_k());" in body,
                                      "GGML_ASSERT(n_embd_head == n_rot);" in body)
    return {names[arch]: graphs[cls] for arch, cls in classes.items() if cls in graphs}


def test_the_head_size_architectures_match_llama_cpp():
    asserted = _graph_asserts()
    assert all(asserted[arch][0] for arch in preflight.KEY_IS_VALUE)
    assert all(asserted[arch][1] for arch in preflight.ROPE_IS_HEAD)
    # and none is missing from the lists
    assert {a for a, (kv, rope) in asserted.items() if kv} <= preflight.KEY_IS_VALUE
    assert {a for a, (kv, rope) in asserted.items() if kv and rope} <= preflight.ROPE_IS_HEAD


def test_the_real_and_synthetic_models_pass(demo_model, arch_models):
    for path, _ in arch_models.values():
        llamahost.inspect(path)
    for vocab in sorted((LLAMA_SRC.parent / "models").glob("ggml-vocab-*.gguf")):
        llamahost.inspect(vocab)
