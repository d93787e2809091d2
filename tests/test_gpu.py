"""On a GPU, with a build of its backend: that backend in use without a warning, its devices listed
with their memory, estimate() against real loads on the GPU (no layer, some, all), a model split
between the GPU and the host, unloads and evictions that give the GPU's memory back, and the Vulkan
module on the same GPU when CUDA cannot be used.

Marked ``gpu``: the default run deselects them (pyproject.toml); ``pytest -m gpu`` runs them where
there is a GPU (wheels/gpu_check.sh, on a machine lent for it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llamahost
import synthetic
from llamahost.core import _native

pytestmark = pytest.mark.gpu

PACKAGE_DIR = Path(_native.__file__).parent  # where a portable build's backend modules lie
PARTS = ("weights", "kv_cache", "compute")


def gpu_devices() -> list[dict]:
    return [d for d in llamahost.devices() if d["type"] == "gpu"]


def gpu_free() -> int:
    return sum(d["memory_free"] for d in gpu_devices())


def in_fresh_process(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` after ``import json, llamahost`` in a new interpreter (the backend is chosen once per process)."""
    environ = {k: v for k, v in os.environ.items() if k != "LLAMAHOST_BACKEND"} | env
    return subprocess.run([sys.executable, "-c", "import json, llamahost\n" + code], env=environ,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory) -> Path:
    """A llama of 8 layers, some 250 MB in F16: big enough for the GPU's memory counts to see."""
    return synthetic.write_llama(tmp_path_factory.mktemp("gpu") / "mid.gguf", n_layer=8, n_embd=1024, n_head=8,
                                 n_head_kv=4, n_ff=2816, weight_type="F16")


@pytest.fixture(scope="module")
def pool_models(tmp_path_factory) -> list[Path]:
    """Three llamas of the same shape, some 80 MB each in F16."""
    folder = tmp_path_factory.mktemp("gpu-pool")
    return [synthetic.write_llama(folder / f"pooled-{n}.gguf", n_layer=8, n_embd=512, n_head=8, n_head_kv=4,
                                  n_ff=1408, weight_type="F16", seed=n) for n in range(3)]


def test_the_gpu_backend_is_in_use_without_a_warning():
    done = in_fresh_process("print(json.dumps(llamahost.system_info()))")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["active_backend"] in info["backend"].split(","), info
    assert info["unavailable_backends"] == {} and "llamahost:" not in done.stderr


def test_devices_list_the_gpu_with_its_memory():
    found = gpu_devices()
    assert found, llamahost.devices()
    for device in found:
        assert device["backend"].lower() == llamahost.system_info()["active_backend"], device
        assert 0 < device["memory_free"] <= device["memory_total"], device


@pytest.mark.parametrize("n_ctx", [1024, 16384])
@pytest.mark.parametrize("n_gpu_layers", [0, 4, "all"])
def test_estimate_matches_a_load_on_the_gpu(mid_model, n_gpu_layers, n_ctx):
    params = {"n_ctx": n_ctx, "parallel": 2, "n_gpu_layers": n_gpu_layers}
    est = llamahost.estimate(mid_model, **params)
    with llamahost.Server(mid_model, **params) as srv:
        real = srv.memory_breakdown()
    assert est.method == "dry run"
    assert [d.name for d in est.devices] == [d.name for d in real]
    for e, r in zip(est.devices, real):
        for part in PARTS:
            got, want = getattr(e, part), getattr(r, part)
            assert abs(got - want) <= 0.02 * max(want, 1), (e.name, part, got, want)


def test_a_model_splits_between_the_gpu_and_the_host(mid_model):
    weights = {}
    for n_gpu_layers in (4, 8):
        with llamahost.Server(mid_model, n_ctx=1024, n_gpu_layers=n_gpu_layers) as srv:
            out = srv.complete("Once", max_tokens=4, ignore_eos=True)
            weights[n_gpu_layers] = sum(d.weights for d in srv.memory_breakdown()[:-1])
        assert out["usage"]["completion_tokens"] == 4
    # eight repeating layers of one size: half of them hold half the bytes
    assert abs(weights[4] / weights[8] - 0.5) < 0.02, weights
    est = llamahost.estimate(mid_model, n_ctx=1024, n_gpu_layers=4)
    assert (sum(d.layers for d in est.devices[:-1]), est.devices[-1].layers) == (4, 4)


def test_unloading_gives_the_gpu_memory_back(mid_model):
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(mid_model, n_ctx=4096, n_gpu_layers="all")
        handle.load().unload()  # what a first load sets up once (the CUDA context, its libraries) stays
        before = gpu_free()
        handle.complete("x", max_tokens=1)
        loaded = gpu_free()
        handle.unload()
        after = gpu_free()
    taken = before - loaded
    assert taken > 200 << 20, (before, loaded)  # the weights alone are 250 MB
    assert after - loaded >= 0.9 * taken, (before, loaded, after)


def test_an_eviction_makes_room_on_the_gpu(pool_models):
    a, b, c = pool_models
    params = {"n_ctx": 1024, "n_gpu_layers": "all"}
    with llamahost.Pool(idle_ttl=None) as probe:
        need = probe.get(a, **params).load().stats()["memory_bytes"]
    with llamahost.Pool(memory_budget=int(need * 2.5), idle_ttl=None) as pool:
        ha, hb, hc = (pool.get(m, **params) for m in (a, b, c))
        ha.complete("x", max_tokens=1)
        hb.complete("x", max_tokens=1)
        two_loaded = gpu_free()
        hc.complete("x", max_tokens=1)  # evicts a, the least recently used
        assert (ha.state, hb.state, hc.state) == ("unloaded", "loaded", "loaded")
        assert ha.stats()["evictions"] == 1
        # a's GPU memory went back before c took its own: the GPU holds two models, not three
        assert gpu_free() >= two_loaded - 0.1 * need, (two_loaded, gpu_free(), need)


needs_both_modules = pytest.mark.skipif(
    not all((PACKAGE_DIR / f"libggml-{name}.so").exists() for name in ("cuda", "vulkan")),
    reason="this build does not carry both the CUDA and the Vulkan module")


@needs_both_modules
def test_vulkan_takes_over_on_the_same_gpu_when_cuda_sees_no_device():
    done = in_fresh_process("print(json.dumps([llamahost.system_info(), llamahost.devices()]))",
                            CUDA_VISIBLE_DEVICES="-1")
    assert done.returncode == 0, done.stderr
    info, devices = json.loads(done.stdout)
    assert info["active_backend"] == "vulkan" and list(info["unavailable_backends"]) == ["cuda"], info
    warnings = [line for line in done.stderr.splitlines() if "llamahost:" in line]
    assert len(warnings) == 1 and "cuda: " in warnings[0], warnings
    gpus = [d for d in devices if d["type"] == "gpu"]
    assert gpus and all(d["backend"] == "Vulkan" and d["memory_total"] > 0 for d in gpus), devices


@needs_both_modules
def test_vulkan_forced_runs_a_model_on_the_gpu(tiny_model):
    done = in_fresh_process(
        f"with llamahost.Server({str(tiny_model)!r}, n_ctx=1024, n_gpu_layers='all') as srv:\n"
        "    out = srv.complete('Once', max_tokens=4, ignore_eos=True)\n"
        "    print(json.dumps([llamahost.system_info()['active_backend'], out['usage']['completion_tokens'],\n"
        "                      [d.name for d in srv.memory_breakdown() if d.weights]]))",
        LLAMAHOST_BACKEND="vulkan")
    assert done.returncode == 0, done.stderr
    active, n_tokens, holding = json.loads(done.stdout)
    assert (active, n_tokens) == ("vulkan", 4) and "Vulkan0" in holding, holding
    assert "llamahost:" not in done.stderr  # forced: nothing else was tried
