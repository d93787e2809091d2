"""A load skips upstream's fitting when its outcome is known: given whole by the caller, or
remembered from an earlier load (engine/plans.py). The allocation is the same to the byte, and a
plan is not used once the file, the parameters or the devices' free memory changed."""

from __future__ import annotations

import json
import os

import pytest

import llamahost
from llamahost.core.devices import devices
from llamahost.engine import plans
from test_models import home  # noqa: F401 - an empty llamahost home

ON_A_GPU = any(d["type"] in ("gpu", "igpu") for d in devices())


def load(model, **params) -> tuple[str, int, list]:
    with llamahost.Server(model, **params) as srv:
        n_ctx = srv.request("GET", "/props").json()["default_generation_settings"]["n_ctx"]
        return srv.fitting, n_ctx, [(d.name, d.weights, d.kv_cache, d.compute) for d in srv.memory_breakdown()]


def test_a_remembered_plan_gives_the_same_allocation(tiny_model, home):  # noqa: F811
    # no context size: upstream's fitting sets it (the trained context for each of the 2 slots)
    fitting, n_ctx, memory = load(tiny_model, parallel=2)
    assert fitting == "ran" and len(list((home / "plans").glob("*.json"))) == 1
    again = load(tiny_model, parallel=2)
    assert again == ("remembered", n_ctx, memory)
    assert n_ctx == llamahost.inspect(tiny_model).n_ctx_train


def test_nothing_to_fit_when_the_caller_gave_it_all(tiny_model, home):  # noqa: F811
    given = dict(n_ctx=512, n_gpu_layers=0) if ON_A_GPU else dict(n_ctx=512)
    fitting, n_ctx, memory = load(tiny_model, **given)
    assert fitting == "not needed" and n_ctx == 512 and not (home / "plans").exists()
    with llamahost.Server(tiny_model, fit="on", **given) as fitted_anyway:  # the same as upstream's own fitting
        assert [(d.name, d.weights, d.kv_cache, d.compute) for d in fitted_anyway.memory_breakdown()] == memory


def test_a_plan_does_not_outlive_a_change(tiny_model, tmp_path, home):  # noqa: F811
    model = tmp_path / "model.gguf"
    model.write_bytes(tiny_model.read_bytes())
    assert load(model, parallel=2)[0] == "ran"
    assert load(model, parallel=2)[0] == "remembered"
    assert load(model, parallel=3)[0] == "ran"  # other parameters: another plan
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    assert load(model, parallel=2)[0] == "ran"
    assert load(model, parallel=2)[0] == "remembered"
    plan_file = home / "plans" / f"{plans.key(_args(model, parallel=2))}.json"
    plan = json.loads(plan_file.read_text())
    total = {d["name"]: d["memory_total"] for d in devices()}
    plan["free"] = {name: free - plans.free_margin(total[name]) - (1 << 20) for name, free in plan["free"].items()}
    plan_file.write_text(json.dumps(plan))  # as if planned with less memory free than now
    assert load(model, parallel=2)[0] == "ran"


def _args(model, **params) -> list[str]:
    from llamahost.engine.server import command_line

    return command_line(str(model), params)


def test_a_pool_plans_once_and_its_load_fits_no_more(tiny_models, home):  # noqa: F811
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_models[1], parallel=2)
        handle.load()
        assert handle._model.backend.fitting == "remembered"  # from the pool's estimate


@pytest.mark.parametrize("free", [[3 << 30], [1 << 30, 2 << 30]])
def test_a_plan_for_other_devices_given_back_is_the_same_plan(tiny_model, free):
    gpus = [{"name": f"CUDA{i}", "memory_free": f} for i, f in enumerate(free)]
    planned = llamahost.estimate(tiny_model, devices=gpus, parallel=2)
    given = llamahost.estimate(tiny_model, devices=gpus, parallel=2, n_ctx=planned.n_ctx,
                               n_gpu_layers=planned.n_gpu_layers, tensor_split=planned.tensor_split or None)
    assert given.devices == planned.devices and given.n_ctx == planned.n_ctx
