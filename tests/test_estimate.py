"""inspect() and estimate(): metadata without weights, memory that matches a real load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import llamahost
import synthetic


def test_inspect_demo_model(demo_model):
    info = llamahost.inspect(demo_model)
    assert (info.architecture, info.n_layers, info.n_ctx_train, info.n_embd) == ("gemma3", 18, 32768, 640)
    assert (info.n_head, info.n_head_kv, info.n_expert, info.n_vocab) == (4, 1, 0, 262144)
    assert info.file_type == "Q4_K_M" and info.sliding_window == 512
    assert 260e6 < info.n_params < 280e6
    assert info.size_bytes == demo_model.stat().st_size
    assert info.chat_template is None  # a base model
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert tokens.length == 262144 and len(tokens.head) == 8  # summarised, not copied


def test_inspect_split_gguf_reads_as_one_model(tmp_path):
    first = synthetic.write_llama(tmp_path / "m-00001-of-00002.gguf", n_layer=1)
    second = synthetic.write_llama(tmp_path / "m-00002-of-00002.gguf", n_layer=1, seed=1)
    info = llamahost.inspect(first)
    assert info.parts == (first, second)
    assert info.size_bytes == first.stat().st_size + second.stat().st_size
    assert len(info.tensors) == 2 * len(llamahost.inspect(second.rename(tmp_path / "alone.gguf")).tensors)
    with pytest.raises(llamahost.InvalidModelError, match="missing 1 of its 2 parts"):
        llamahost.inspect(first)


def test_inspect_rejects_damaged_files(tmp_path, tiny_model):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:5000])
    with pytest.raises(llamahost.InvalidModelError, match="cut.gguf"):
        llamahost.inspect(cut)
    with pytest.raises(llamahost.InvalidModelError, match="cut.gguf"):
        llamahost.estimate(cut)
    with pytest.raises(FileNotFoundError):
        llamahost.estimate(tmp_path / "missing.gguf")


# an encoder (bert) runs at its trained 512-token context only
CASES = [(arch, n_ctx, kv)
         for arch in ("gemma3-swa (demo)", "llama-gqa", "qwen3", "qwen3moe", "bert-embedding")
         for n_ctx in ((512,) if arch.startswith("bert") else (512, 4096, 32768))
         for kv in ("f16", "q8_0")]


@pytest.mark.parametrize("arch, n_ctx, kv", CASES)
def test_dry_run_and_closed_form_against_a_real_load(arch, n_ctx, kv, arch_models):
    model, extra = arch_models[arch]
    params = dict(extra, n_ctx=n_ctx, cache_type_k=kv, cache_type_v=kv, flash_attn=kv != "f16" or "auto", parallel=2)
    est = llamahost.estimate(model, **params)
    closed = llamahost.estimate(model, method="closed form", **params)
    with llamahost.Server(model, **params) as srv:
        real = srv.memory_breakdown()
    real_total = sum(d.used for d in real)
    assert closed.method == "closed form" and est.method == "dry run"
    assert real_total <= closed.total_bytes <= 1.15 * real_total, (closed.total_bytes, real_total)
    assert [d.name for d in est.devices] == [d.name for d in real]
    for e, r in zip(est.devices, real):
        for part in ("weights", "kv_cache", "compute"):
            got, want = getattr(e, part), getattr(r, part)
            assert abs(got - want) <= 0.02 * max(want, 1), (part, got, want)
    assert est.n_ctx == n_ctx and est.fits
    assert est.devices[-1].layers == est.n_layers


def test_kv_cache_grows_with_context_and_shrinks_with_q8(demo_model):
    small = llamahost.estimate(demo_model, n_ctx=2048).devices[-1].kv_cache
    big = llamahost.estimate(demo_model, n_ctx=16384).devices[-1].kv_cache
    q8 = llamahost.estimate(demo_model, n_ctx=16384, cache_type_k="q8_0", cache_type_v="q8_0",
                            flash_attn=True).devices[-1].kv_cache
    assert small < big and q8 < big


def test_hypothetical_devices_more_memory_never_fewer_layers(demo_model):
    previous = -1
    for mib in (0, 10, 30, 60, 90, 120, 200, 400, 4000):
        est = llamahost.estimate(demo_model, n_ctx=4096, devices=[{"name": "CUDA0", "memory_free": mib << 20}])
        gpu = est.devices[0]
        assert gpu.layers >= previous, (mib, gpu.layers, previous)
        assert gpu.fits
        previous = gpu.layers
    assert previous == est.n_layers + 1  # everything, the output layer too
    two = llamahost.estimate(demo_model, n_ctx=4096, devices=[{"name": "CUDA0", "memory_free": 40 << 20},
                                                               {"name": "CUDA1", "memory_free": 40 << 20}])
    assert two.devices[0].layers > 0 and two.devices[1].layers > 0
    assert sum(d.layers for d in two.devices[:2]) == two.n_gpu_layers


def test_estimate_gpu_layers_has_xllamacpps_signature_and_fields(demo_model):
    cpu = llamahost.estimate_gpu_layers([{"name": "CPU", "memory_free": 1 << 34}], str(demo_model), [], 4096, 512, 1, "f16")
    assert cpu.layers == 0 and cpu.gpu_sizes == []
    assert cpu.total_size == llamahost.estimate(demo_model, n_ctx=4096, parallel=1).total_bytes
    gpus = [{"name": "CUDA0", "memory_free": 60 << 20}, {"name": "CUDA1", "memory_free": 60 << 20}]
    two = llamahost.estimate_gpu_layers(gpus, str(demo_model), [], 4096, 512, 1, "q8_0")
    assert two.layers > 0 and len(two.gpu_sizes) == 2 and abs(sum(two.tensor_split) - 1) < 1e-9
    assert all(size <= 60 << 20 for size in two.gpu_sizes)
    assert two.vram_size == sum(two.gpu_sizes) and two.total_size >= two.vram_size and two.graph > 0


# xllamacpp's own estimate_gpu_layers, in a process of its own (its engine is another llama.cpp)
_XLLAMACPP = r"""
import json, sys
import xllamacpp
out = []
for call in json.loads(sys.argv[1]):
    try:
        r = xllamacpp.estimate_gpu_layers(**call)
        out.append({f: getattr(r, f) for f in ("layers", "graph", "vram_size", "total_size", "tensor_split", "gpu_sizes")})
    except Exception as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(out))
"""


def test_xllamacpps_calls_work_unchanged(tmp_path):
    """The same calls through xllamacpp and llamahost: the NodeTool seed's (kv_cache_type=""), each
    cache type xllamacpp knows, device lists with and without CPU entries (as lh.devices() lists
    them on a GPU machine), a projector. Both accept them and answer the same fields and types; the
    tensor_split llamahost returns starts a Server as it is. (A model with a 32k vocabulary:
    xllamacpp reads every token in Python, at each call.)"""
    import dataclasses

    demo_model = synthetic.write_model(tmp_path / "model.gguf", "llama", vocab="phi-3", n_layer=4, n_embd=256,
                                       n_ff=512)
    (tmp_path / "projector").mkdir()  # not beside the model: a Server would take it for the model's
    projector = synthetic.write_projector(tmp_path / "projector" / "mmproj-demo-f16.gguf")
    cpu = {"name": "CPU", "memory_free": 16 << 30, "memory_total": 16 << 30, "type": "cpu"}
    gpu = {"name": "CUDA0", "memory_free": 60 << 20, "memory_total": 60 << 20, "type": "gpu"}
    gpu1 = dict(gpu, name="CUDA1", memory_free=30 << 20)
    calls = [dict(gpus=[gpu], kv_cache_type=kv) for kv in ("", "f16", "q8_0", "q4_0")]
    calls += [dict(gpus=gpus, kv_cache_type="") for gpus in ([cpu], [gpu, cpu], [gpu, gpu1, cpu], [gpu, gpu1])]
    calls += [dict(gpus=[gpu, cpu], kv_cache_type="", projectors=[str(projector)])]
    for call in calls:
        call.update(model_path=str(demo_model), context_length=2048, batch_size=512, num_parallel=1)
        call.setdefault("projectors", [])
    done = subprocess.run([sys.executable, "-c", _XLLAMACPP, json.dumps(calls)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.splitlines()[-1])
    for call, their in zip(calls, theirs):
        assert "error" not in their, (call["gpus"], their)
        ours = dataclasses.asdict(llamahost.estimate_gpu_layers(**call))
        assert ours.keys() == their.keys()
        for field, value in ours.items():
            assert type(value) is type(their[field]), (field, value, their[field])
            if isinstance(value, list):
                assert all(isinstance(v, (int, float)) for v in value)
        n_gpus = sum(g["name"] != "CPU" for g in call["gpus"]) if call["gpus"][0]["name"] != "CPU" else 0
        assert len(ours["tensor_split"]) == n_gpus  # a CPU entry is no GPU
        assert len(ours["gpu_sizes"]) == (n_gpus if ours["layers"] else 0)
    seed = llamahost.estimate_gpu_layers([gpu, cpu], str(demo_model), [], 2048, 512, 1, "")
    assert seed.layers > 0 and seed.tensor_split == [1.0]
    assert seed.total_size == llamahost.estimate_gpu_layers([gpu], str(demo_model), [], 2048, 512, 1, "f16").total_size
    with llamahost.Server(demo_model, n_ctx=2048, tensor_split=seed.tensor_split) as srv:
        assert srv.health()["status"] == "ok"
    with pytest.raises(ValueError, match="kv_cache_type"):
        llamahost.estimate_gpu_layers([gpu], str(demo_model), [], 2048, 512, 1, "q9_9")


def test_bad_device_description(demo_model):
    with pytest.raises(ValueError, match="memory_free"):
        llamahost.estimate(demo_model, devices=[{"name": "CUDA0", "memory_free": "8GB"}])


def test_max_ctx(tiny_model):
    est = llamahost.estimate(tiny_model, n_ctx=1024, devices=[{"name": "CUDA0", "memory_free": 6 << 20}],
                             n_gpu_layers="all")
    assert 0 < est.max_ctx < 4096 and est.max_ctx % 256 == 0
    assert llamahost.estimate(tiny_model, n_ctx=1024).max_ctx == 4096  # the trained context fits in RAM


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "llamahost", *args], capture_output=True, text=True, timeout=120)


def test_cli_inspect_and_estimate(demo_model):
    done = run_cli("inspect", str(demo_model))
    assert done.returncode == 0 and "gemma3" in done.stdout and "Q4_K_M" in done.stdout
    data = json.loads(run_cli("inspect", str(demo_model), "--json").stdout)
    assert data["n_layers"] == 18 and "general.architecture" in data["metadata"]
    table = run_cli("estimate", str(demo_model), "--ctx", "4096", "--device", "CUDA0=100MiB")
    assert table.returncode == 0 and "CUDA0" in table.stdout and "MiB" in table.stdout
    est = json.loads(run_cli("estimate", str(demo_model), "--ctx", "4096", "--json").stdout)
    assert est["fits"] and est["n_ctx"] == 4096 and est["devices"][-1]["name"] == "CPU"
    bad = run_cli("estimate", str(demo_model), "--device", "CUDA0")
    assert bad.returncode == 2 and "NAME=SIZE" in bad.stderr


def test_closed_form_when_the_engine_cannot_read_the_model(tmp_path):
    # an architecture this build of llama.cpp does not know, shaped like a llama
    model = synthetic.write_model(tmp_path / "future.gguf", "futurellama", vocab="llama-spm")
    with pytest.raises(llamahost.ModelLoadError, match="future.gguf"):
        llamahost.estimate(model, n_ctx=4096, method="dry run")
    est = llamahost.estimate(model, n_ctx=4096)
    assert est.method == "closed form" and est.n_ctx == 4096 and est.fits
    like = llamahost.estimate(synthetic.write_model(tmp_path / "llama.gguf", "llama"), n_ctx=4096)
    assert like.total_bytes <= est.total_bytes <= 1.15 * like.total_bytes
    planned = llamahost.estimate(model, n_ctx=4096, devices=[{"name": "GPU0", "memory_free": 1 << 30}])
    assert planned.method == "closed form" and planned.n_gpu_layers == est.n_layers + 1
    with pytest.raises(ValueError, match="method"):
        llamahost.estimate(model, method="guess")


def test_n_ctx_zero_means_as_large_as_fits(tmp_path, demo_model):
    from llamahost.planning.estimate import fitted_context

    # trained on 64M tokens: its full KV cache (tens of GiB) cannot fit this machine's memory
    huge = synthetic.write_model(tmp_path / "long.gguf", "llama", n_ctx_train=1 << 26)
    assert not llamahost.estimate(huge, n_ctx=0).fits
    n_ctx = fitted_context(str(huge), {"n_ctx": 0})
    assert 0 < n_ctx < 1 << 26 and n_ctx % 256 == 0
    assert llamahost.estimate(huge, n_ctx=n_ctx).fits
    assert not llamahost.estimate(huge, n_ctx=n_ctx + 4096).fits
    assert fitted_context(str(demo_model), {"n_ctx": 0}) is None  # its trained context fits
    with llamahost.Server(demo_model, n_ctx=0, parallel=1) as srv:
        assert srv.props()["default_generation_settings"]["n_ctx"] == 32768


def test_what_a_server_holds_beyond_the_model_counts(tiny_models, tmp_path):
    """LoRA adapters, a draft model, a projector and the prompt cache each on their own line."""
    model, draft = tiny_models[0], tiny_models[1]
    plain = llamahost.estimate(model, n_ctx=512, cache_ram=0)
    assert (plain.devices[-1].lora, plain.devices[-1].draft, plain.devices[-1].prompt_cache) == (0, 0, 0)
    assert plain.worst_case_bytes == plain.total_bytes

    lora = synthetic.write_lora(tmp_path / "adapter.gguf")
    with_lora = llamahost.estimate(model, n_ctx=512, cache_ram=0, lora=str(lora))
    assert with_lora.devices[-1].lora == sum(t.nbytes for t in llamahost.inspect(lora).tensors) > 0
    assert with_lora.total_bytes == plain.total_bytes + with_lora.devices[-1].lora
    with llamahost.Server(model, n_ctx=512, lora=str(lora)) as srv:  # an adapter the engine takes
        assert srv.request("GET", "/lora-adapters").json()[0]["path"] == str(lora)

    with_draft = llamahost.estimate(model, n_ctx=512, cache_ram=0, model_draft=str(draft))
    alone = llamahost.estimate(draft, n_ctx=512, cache_ram=0)
    assert 0.9 * alone.total_bytes <= with_draft.devices[-1].draft <= 1.1 * alone.total_bytes
    assert with_draft.total_bytes == plain.total_bytes + with_draft.devices[-1].draft

    projector = synthetic.write_projector(tmp_path / "mmproj-f16.gguf")  # only its tensor table is real
    with_projector = llamahost.estimate(model, n_ctx=512, cache_ram=0, mmproj=str(projector))
    assert with_projector.method == "closed form"  # the engine cannot run a synthetic projector
    assert with_projector.devices[-1].projector == sum(t.nbytes for t in llamahost.inspect(projector).tensors)

    assert llamahost.estimate(model, n_ctx=512, cache_ram=100).devices[-1].prompt_cache == 100 << 20
    unlimited = llamahost.estimate(model, n_ctx=512, cache_ram=-1)  # capped at n_ctx tokens, plus the entry saved
    assert unlimited.devices[-1].prompt_cache == 2 * unlimited.devices[-1].kv_cache
    default = llamahost.estimate(model, n_ctx=512)  # llama-server's own default: 8 GiB
    assert default.worst_case_bytes == default.total_bytes + (8192 << 20)
