"""``estimate()``: will this model fit, at this context, on these devices, and how.

On this machine's devices the answer is the engine's own: a dry run of exactly the load
a ``Server`` with the same parameters would do (upstream's fitting, then a model and
context created with nothing allocated), so it matches the real allocation to the byte.
For devices the machine does not have, layers are planned from per-layer costs: weights
from the GGUF tensor table, KV cache and compute buffers from that dry run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any, Sequence

from ..core import _native, cmdline, config, rpc
from ..core.devices import devices
from ..errors import ModelLoadError
from ..gguf.info import ModelInfo, inspect
from .closed_form import closed_form, load_params

CTX_STEP = 256  # llama.cpp pads context sizes to this


@dataclass(frozen=True)
class DeviceEstimate:
    """Bytes on one device. ``used``: what a load allocates (the model's weights, KV cache and
    compute buffers, and a projector's, LoRA adapters' and draft model's); ``worst_case`` adds
    what grows while serving, upstream's prompt cache at its limit (host memory)."""

    name: str
    weights: int
    kv_cache: int
    compute: int
    free: int
    total: int
    layers: int
    description: str = ""
    projector: int = 0  # a multimodal projector: weights and compute buffer
    lora: int = 0  # LoRA adapters' weights
    draft: int = 0  # a draft model: weights, KV cache and compute buffer
    prompt_cache: int = 0  # saved prompts, at --cache-ram's limit

    @property
    def used(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.projector + self.lora + self.draft

    @property
    def worst_case(self) -> int:
        return self.used + self.prompt_cache

    @property
    def fits(self) -> bool:
        return self.used <= self.free


@dataclass(frozen=True)
class Estimate:
    """Bytes per device. ``devices`` ends with the host ("CPU"), which holds what is not offloaded."""

    model: str
    n_ctx: int
    n_layers: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...]
    devices: tuple[DeviceEstimate, ...]
    method: str = "dry run"  # or "planned" (hypothetical devices) or "closed form" (metadata alone)
    request: dict = field(default_factory=dict, repr=False)  # estimate()'s keywords, to ask again

    @property
    def host(self) -> int:
        return self.devices[-1].used

    @property
    def total_bytes(self) -> int:
        """What a load allocates, all devices together."""
        return sum(d.used for d in self.devices)

    @property
    def worst_case_bytes(self) -> int:
        """All a server can come to hold, all devices together: ``total_bytes`` plus the prompt
        cache at its limit. What a Pool's memory budget counts."""
        return sum(d.worst_case for d in self.devices)

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @cached_property
    def max_ctx(self) -> int:
        """The largest n_ctx (up to the trained context) that still fits, measured by dry runs."""
        return _max_ctx(self)

    def as_dict(self) -> dict:
        return {
            "model": self.model, "n_ctx": self.n_ctx, "n_layers": self.n_layers, "n_gpu_layers": self.n_gpu_layers,
            "tensor_split": list(self.tensor_split), "host": self.host, "total_bytes": self.total_bytes,
            "worst_case_bytes": self.worst_case_bytes, "fits": self.fits, "max_ctx": self.max_ctx,
            "method": self.method,
            "devices": [dict(vars(d), used=d.used, worst_case=d.worst_case, fits=d.fits) for d in self.devices],
        }


def dry_run(model: str, params: dict[str, Any]) -> dict:
    """The engine's memory breakdown for a server with these parameters, nothing allocated."""
    return engine_dry_run(config.server_args(model, params))


def engine_dry_run(args: list[str]) -> dict:
    """The engine's memory breakdown for llama-server's command line ``args``, nothing allocated
    (RuntimeError where the engine refuses it). With RPC workers (``--rpc``), each is checked
    first and the dry run runs in a process of its own: the engine asks the workers about their
    devices, keeps those registered for the rest of its process, and ends it where one fails."""
    workers, _ = cmdline.take_rpc(args)
    if workers is None:
        return json.loads(_native.memory_estimate(args))
    rpc.check(workers)
    try:
        done = subprocess.run([sys.executable, "-m", "llamahost.planning.dry_run", *args], capture_output=True,
                              text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise RuntimeError("the dry run with RPC workers did not finish in 600 s (a worker that stopped answering?)")
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _device(entry: dict, layers: int, name: str | None = None) -> DeviceEstimate:
    return DeviceEstimate(name or entry["name"], entry["model"], entry["context"], entry["compute"],
                          entry["free"], entry["total"], layers, entry.get("description", ""))


def _split_layers(n_offloaded: int, weights: Sequence[float]) -> list[int]:
    """Layers per device for n_offloaded layers split by weights (llama.cpp's tensor split)."""
    total = sum(weights) or len(weights)
    shares = [w / total if sum(weights) else 1 / len(weights) for w in weights]
    counts = [int(n_offloaded * s) for s in shares]
    counts[-1] += n_offloaded - sum(counts)
    return counts


def _measured(model: str, params: dict) -> Estimate:
    return from_engine(model, dry_run(model, params))


@lru_cache(maxsize=128)
def _costs_cached(model: str, file_stamp: tuple, params_json: str) -> Estimate:
    return _measured(model, json.loads(params_json))


def _costs(model: str, params: dict) -> Estimate:
    """An all-CPU dry run, kept per model file (and its size and mtime) and parameters: what
    planning for hypothetical devices, asked again and again by max_ctx, starts from."""
    st = os.stat(model)
    return _costs_cached(model, (st.st_size, st.st_mtime_ns), json.dumps(params, sort_keys=True, default=str))


def from_engine(model: str, data: dict) -> Estimate:
    """An Estimate from the engine's breakdown JSON (a dry run's, or a loaded server's)."""
    n_layers = data["n_layers"]
    gpus = data["devices"]
    ngl = data.get("n_gpu_layers", -1)
    if not gpus:
        offloaded = 0
    elif ngl in (-1, -2):  # auto (fitted to everything) or all: every layer and the output
        offloaded = n_layers + 1
    else:
        offloaded = min(ngl, n_layers + 1)
    split = [float(s) for s in data.get("tensor_split", [])] or [float(g["free"]) for g in gpus]
    per_gpu = _split_layers(offloaded, split) if gpus else []
    devices = [_device(g, n) for g, n in zip(gpus, per_gpu)]
    devices.append(_device(data["host"], max(n_layers - offloaded, 0), name="CPU"))
    est = Estimate(model, data["n_ctx"], n_layers, offloaded, tuple(split if gpus else ()), tuple(devices))
    return _with_extras(est, data)


def _add(est: Estimate, field_name: str, per_device: dict[str, int]) -> Estimate:
    """``est`` with bytes added to one field of some devices (by name; "host" is the last)."""
    devices = list(est.devices)
    for name, size in per_device.items():
        i = len(devices) - 1 if name == "host" else next((i for i, d in enumerate(devices) if d.name == name),
                                                         len(devices) - 1)
        devices[i] = replace(devices[i], **{field_name: getattr(devices[i], field_name) + size})
    return replace(est, devices=tuple(devices))


def _layer_device(est: Estimate, layer: int) -> int:
    """The index in ``est.devices`` of the device holding repeating layer ``layer`` (llama.cpp
    offloads the last layers, in the devices' order)."""
    first_offloaded = est.n_layers + 1 - est.n_gpu_layers
    if layer < first_offloaded:
        return len(est.devices) - 1
    position = layer - first_offloaded
    for i, device in enumerate(est.devices[:-1]):
        if position < device.layers:
            return i
        position -= device.layers
    return len(est.devices) - 1


def lora_bytes(est: Estimate, adapters: Sequence[str]) -> dict[str, int]:
    """LoRA adapters' tensors, on the devices of the layers they adapt (the rest on the host)."""
    out: dict[str, int] = {}
    for path in adapters:
        for t in inspect(path).tensors:
            match = re.match(r"blk\.(\d+)\.", t.name)
            i = _layer_device(est, int(match[1])) if match else len(est.devices) - 1
            name = "host" if i == len(est.devices) - 1 else est.devices[i].name
            out[name] = out.get(name, 0) + t.nbytes
    return out


def prompt_cache_bytes(cache_ram_mib: int, kv_cache: int) -> int:
    """The most upstream's prompt cache holds (server_prompt_cache, server-task.cpp): --cache-ram
    MiB; with no size limit (-1) it keeps at most n_ctx tokens, plus the entry being saved:
    twice the KV cache; 0: none."""
    if cache_ram_mib > 0:
        return cache_ram_mib << 20
    return 2 * kv_cache if cache_ram_mib < 0 else 0


def _with_extras(est: Estimate, data: dict) -> Estimate:
    """What the engine's breakdown of the main model leaves out: a projector and a draft model
    (measured by the engine), LoRA adapters (their tensors) and the prompt cache's limit."""
    est = _add(est, "projector", {p["name"]: p["bytes"] for p in data.get("projector", [])})
    draft = data.get("draft")
    if draft:
        held = {d["name"]: d["model"] + d["context"] + d["compute"] for d in draft["devices"]}
        held["host"] = draft["host"]["model"] + draft["host"]["context"] + draft["host"]["compute"]
        est = _add(est, "draft", held)
    est = _add(est, "lora", lora_bytes(est, data.get("lora", [])))
    kv = sum(d.kv_cache for d in est.devices) + (
        sum(d["context"] for d in draft["devices"]) + draft["host"]["context"] if draft else 0)
    return _add(est, "prompt_cache", {"host": prompt_cache_bytes(data.get("cache_ram_mib", 0), kv)})


def _layer_weights(info: ModelInfo) -> tuple[list[int], int, int]:
    """Bytes of each repeating layer, of the output layer, and of everything else (input)."""
    per_layer = [0] * info.n_layers
    output = 0
    rest = 0
    for t in info.tensors:
        match = re.match(r"blk\.(\d+)\.", t.name)
        if match and int(match[1]) < info.n_layers:
            per_layer[int(match[1])] += t.nbytes
        elif t.name.startswith("output"):
            output += t.nbytes
        else:
            rest += t.nbytes
    return per_layer, output, rest


def _planned(info: ModelInfo, measured: Estimate, devices: Sequence[dict], n_gpu_layers: Any,
             adapters: Sequence[str]) -> Estimate:
    """Place layers on hypothetical devices from per-layer costs (llama.cpp offloads the last
    layers; a projector goes to the first device, LoRA tensors with their layers; a draft model
    and the prompt cache stay on the host)."""
    host = measured.devices[-1]
    per_layer, output, rest = _layer_weights(info)
    n = info.n_layers
    kv_per_layer = host.kv_cache // max(n, 1)
    lora_per_layer = [0] * n
    lora_rest = 0
    for path in adapters:
        for t in inspect(path).tensors:
            match = re.match(r"blk\.(\d+)\.", t.name)
            if match and int(match[1]) < n:
                lora_per_layer[int(match[1])] += t.nbytes
            else:
                lora_rest += t.nbytes
    compute = host.compute
    # layer n is the output layer; offloading k layers moves layers n+1-k .. n
    costs = [w + kv_per_layer + a for w, a in zip(per_layer, lora_per_layer)] + [output]
    order = list(range(n, -1, -1))
    limit = n + 1 if n_gpu_layers in ("auto", "all", None) else int(n_gpu_layers)
    placed: list[list[int]] = [[] for _ in devices]
    cursor = 0
    for i, dev in enumerate(devices):
        budget = int(dev["memory_free"]) - compute - (host.projector if i == 0 else 0)
        used = 0
        while cursor < min(limit, len(order)) and (used + costs[order[cursor]] <= budget or n_gpu_layers == "all"):
            used += costs[order[cursor]]
            placed[i].append(order[cursor])
            cursor += 1
    out = []
    for i, (dev, layers) in enumerate(zip(devices, placed)):
        weights = sum(per_layer[j] if j < n else output for j in layers)
        kv = kv_per_layer * sum(1 for j in layers if j < n)
        free = int(dev["memory_free"])
        out.append(DeviceEstimate(dev["name"], weights, kv, compute if layers else 0, free,
                                  int(dev.get("memory_total", free)), len(layers), dev.get("description", ""),
                                  projector=host.projector if i == 0 else 0,
                                  lora=sum(lora_per_layer[j] for j in layers if j < n)))
    offloaded = cursor
    on_cpu = [j for j in order[offloaded:]]
    cpu_weights = rest + sum(per_layer[j] if j < n else output for j in on_cpu)
    cpu_kv = kv_per_layer * sum(1 for j in on_cpu if j < n)
    out.append(DeviceEstimate("CPU", cpu_weights, cpu_kv, compute, host.free, host.total,
                              sum(1 for j in on_cpu if j < n), "system memory",
                              lora=lora_rest + sum(lora_per_layer[j] for j in on_cpu if j < n), draft=host.draft,
                              prompt_cache=host.prompt_cache))
    split = tuple(float(len(p)) for p in placed)
    return Estimate(measured.model, measured.n_ctx, n, offloaded, split, tuple(out),
                    method="planned" if measured.method == "dry run" else measured.method)


def estimate(model: str | os.PathLike, *, n_ctx: int | None = None, n_batch: int | None = None,
             n_ubatch: int | None = None, parallel: int | None = None, cache_type_k: str | None = None,
             cache_type_v: str | None = None, mmproj: str | None = None, devices: Sequence[dict] | None = None,
             n_gpu_layers: int | str = "auto", method: str = "auto", **params: Any) -> Estimate:
    """Memory per device for serving ``model`` with these parameters (see the module doc).

    ``devices=[{"name": "CUDA0", "memory_free": 8 << 30}, ...]`` plans for hardware this
    machine does not have. ``method``: "dry run" (the engine's), "closed form" (metadata
    alone), or "auto": the dry run, and the closed form when the engine cannot read the
    model. Other keywords are Server parameters; a projector (``mmproj``), LoRA adapters
    (``lora``) and a draft model (``model_draft``) count on their own lines, and the prompt
    cache (``cache_ram``) in ``worst_case_bytes``.
    """
    if method not in ("auto", "dry run", "closed form"):
        raise ValueError(f"method must be 'auto', 'dry run' or 'closed form', not {method!r}")
    path = os.fspath(model)
    info = inspect(path)  # a clear error for a bad file before the engine reads it
    given = dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, parallel=parallel, cache_type_k=cache_type_k,
                 cache_type_v=cache_type_v, mmproj=mmproj)
    server_params = {k: v for k, v in given.items() if v is not None}
    server_params.update(params)
    request = dict(server_params, devices=devices, n_gpu_layers=n_gpu_layers, method=method)
    for dev in devices or ():
        if not isinstance(dev, dict) or "name" not in dev or not isinstance(dev.get("memory_free"), int):
            raise ValueError(f"each device must be a dict with a name and an int memory_free; got {dev!r}")
    # hypothetical devices are planned from the costs of an all-CPU load
    base_params = dict(server_params, n_gpu_layers=n_gpu_layers if devices is None else 0)
    if method == "closed form":
        result = _closed_form(path, info, base_params)
    else:
        try:
            result = _measured(path, base_params) if devices is None else _costs(path, base_params)
        except RuntimeError as exc:
            if method == "dry run":
                raise ModelLoadError(path, str(exc)) from None
            result = _closed_form(path, info, base_params)  # the engine cannot read it: metadata alone
    if devices is not None:
        result = _planned(info, result, devices, n_gpu_layers, _adapters(base_params))
    return replace(result, request=request)


def _adapters(params: dict) -> list[str]:
    lora = params.get("lora") or []
    return [os.fspath(lora)] if isinstance(lora, (str, os.PathLike)) else [os.fspath(a) for a in lora]


def _closed_form(path: str, info: ModelInfo, params: dict) -> Estimate:
    """The closed form of the model, with a projector's and adapters' tensors and the prompt
    cache's limit on the host (a draft model is not counted)."""
    host = closed_form(path, info, {k: v for k, v in params.items() if k != "mmproj"})
    cpu = next((d for d in devices() if d["type"] == "cpu"), {"memory_free": 0, "memory_total": 0})
    est = Estimate(path, host.n_ctx, info.n_layers, 0, (), (
        DeviceEstimate("CPU", host.weights, host.kv_cache, host.compute, cpu["memory_free"], cpu["memory_total"],
                       info.n_layers, "system memory"),), method="closed form")
    projector = sum(t.nbytes for t in inspect(params["mmproj"]).tensors) if params.get("mmproj") else 0
    lora = sum(t.nbytes for a in _adapters(params) for t in inspect(a).tensors)
    cache_ram = load_params(path, params)["cache_ram_mib"]
    return _add(_add(_add(est, "projector", {"host": projector}), "lora", {"host": lora}), "prompt_cache",
                {"host": prompt_cache_bytes(cache_ram, est.devices[-1].kv_cache)})


@dataclass
class MemoryEstimate:
    """xllamacpp's result type, so its users switch by changing the import."""

    layers: int
    graph: int
    vram_size: int
    total_size: int
    tensor_split: list[float]
    gpu_sizes: list[int]


def estimate_gpu_layers(gpus: list[dict], model_path: str, projectors: list[str], context_length: int,
                        batch_size: int, num_parallel: int, kv_cache_type: str) -> MemoryEstimate:
    """xllamacpp's ``estimate_gpu_layers`` (same arguments, same result fields), answered by
    ``estimate()``. ``gpus``: ``{"name", "memory_free"}`` dicts, as ``llamahost.devices()`` or
    xllamacpp's ``get_device_info()`` list them; CPU entries are not GPUs, and a list opening with
    one means no GPU (then only ``total_size`` is set, as xllamacpp does). ``kv_cache_type``: a
    llama.cpp cache type, ``""`` for its default (f16). ``tensor_split`` holds one share per GPU,
    in the order given: ``Server(tensor_split=...)`` takes it as it is. Of several projectors,
    the first is counted (llama.cpp loads one)."""
    cache_type = kv_cache_type or "f16"
    if cache_type not in config.CACHE_TYPES:
        raise ValueError(f"kv_cache_type must be one of {', '.join(config.CACHE_TYPES)} or '' (f16); "
                         f"got {kv_cache_type!r}")
    params = dict(n_ctx=context_length, n_batch=batch_size, parallel=num_parallel,
                  cache_type_k=cache_type, cache_type_v=cache_type, mmproj=projectors[0] if projectors else None)
    if cache_type != "f16":
        params["flash_attn"] = True  # a quantized V cache needs flash attention
    on_gpus = [] if gpus and _is_cpu(gpus[0]) else [g for g in gpus if not _is_cpu(g)]
    est = estimate(model_path, devices=[{"name": g["name"], "memory_free": int(g["memory_free"])} for g in on_gpus]
                   if on_gpus else None, **params)
    if not on_gpus or est.n_gpu_layers == 0:
        return MemoryEstimate(0, 0, 0, est.total_bytes, [0.0] * len(on_gpus), [])
    placed = est.devices[:-1]
    return MemoryEstimate(
        layers=est.n_gpu_layers,
        graph=max(d.compute for d in placed),
        vram_size=sum(d.used for d in placed),
        total_size=est.total_bytes,
        tensor_split=[d.layers / est.n_gpu_layers for d in placed],
        gpu_sizes=[d.used for d in placed],
    )


def _is_cpu(device: dict) -> bool:
    """A device entry for the host: named CPU, or of the CPU type (llamahost's "cpu", ggml's enum)."""
    kind = device.get("type")
    return device.get("name") == "CPU" or str(getattr(kind, "name", kind)).lower().endswith("cpu")


def _again(est: Estimate, n_ctx: int) -> Estimate:
    return estimate(est.model, **dict(est.request, n_ctx=n_ctx))


def _max_ctx(est: Estimate) -> int:
    n_ctx_train = inspect(est.model).n_ctx_train or est.n_ctx
    top = _again(est, n_ctx_train)
    if top.fits:
        return n_ctx_train
    low, low_fits = est.n_ctx, est.fits
    if not low_fits:
        low = CTX_STEP
        if not _again(est, low).fits:
            return 0
    high = n_ctx_train
    while high - low > CTX_STEP:  # bytes grow with n_ctx: bisect on dry runs
        mid = (low + high) // 2 // CTX_STEP * CTX_STEP
        if mid <= low:
            break
        if _again(est, mid).fits:
            low = mid
        else:
            high = mid
    return low




def fitted_context(model: str, params: dict) -> int | None:
    """What ``n_ctx=0`` ("as large as fits") means on the host: None when the trained context
    fits (upstream then uses it; with a GPU upstream's own fitting decides), otherwise the
    largest context that fits. The closed form answers the common case in milliseconds."""
    if load_params(model, params)["n_ctx"] != 0 or any(d["type"] in ("gpu", "igpu") for d in devices()):
        return None
    try:
        if closed_form(model, inspect(model), params).total <= _host_free():  # an upper bound fits: the load does
            return None
    except ModelLoadError:
        return None  # no closed form for this model: leave it to the engine
    exact = estimate(model, **params)
    if exact.fits:
        return None
    if exact.max_ctx == 0:
        raise ModelLoadError(model, "does not fit in free memory even with a 256-token context")
    return exact.max_ctx


def _host_free() -> int:
    return next((d["memory_free"] for d in devices() if d["type"] == "cpu"), 0)
