"""The GPU half of llamahost, checked on a real GPU in one run; and the same code on the CPU build,
with small models, so that it cannot rot (CI runs ``--cpu-only``).

    python wheels/gpu_check.py --out DIR [--build-info FILE]   # a GPU and a CUDA build (wheels/gpu_check.sh)
    python wheels/gpu_check.py --cpu-only --out DIR            # the CPU build: under a minute

Synthetic llamas are written first (tests/synthetic.py: the demo model is too big to carry to a
lent machine); then each step runs in a process of its own, under its time limit and before
--deadline (the device tool's call ends then): a step without the time it needs is skipped, and a
GPU run called again on the same machine keeps the models and the steps that passed, and runs the
others. On the CPU every run is whole.

  devices   system_info() and devices(): the GPU backend in use with no warning, the GPU with its
            memory against nvidia-smi's total, and what the CUDA context itself takes on the GPU
  estimate  estimate() against memory_breakdown() of the real load (at most 2 % apart per device and
            part), and against the memory the driver saw the load take (nvidia-smi; the process's
            RSS on the CPU) after loading and after a first generation: a model of the demo's size
            (110M parameters) and a 1.0B one, at two contexts each and 0, half or all layers on the GPU
  tests     the suite's GPU-marked tests (pytest -m gpu); on the CPU, that they are all collected
  speed     prompt and generation tokens/s of the 1.0B model in-process against llama-server built
            from the same tree, on the same device, each alone: a warm-up, then one run each
  pool      a pool whose budget holds two of three models: the third evicts the least recently
            used, and the memory the driver sees grows by two models, not three
  fallback  (GPU only) CUDA hidden (CUDA_VISIBLE_DEVICES=-1): the Vulkan module takes over on the
            same GPU, CUDA's reason given
  vulkan    (GPU only) Vulkan forced: estimate() against the load, prompt and generation tokens/s

Prints one summary and writes DIR/gpu_check.json with every figure (and DIR/gpu_tests.xml, pytest's
report); the models and the steps' own files go to --work. Exits 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import synthetic  # noqa: E402  (gguf and numpy only: the orchestrating process never touches the GPU)

MiB = 1 << 20
TOLERANCE = 0.02  # estimate() against the real load, per device and part
PROMPT = ("Write a detailed report about the history of sailing ships, their rigging, the trade routes they "
          "followed and the ports they connected. ") * 16  # 434 tokens in the synthetic models' vocabulary
GPU_TESTS = ROOT / "tests" / "test_gpu.py"  # where the suite's GPU-marked tests live


@dataclass(frozen=True)
class Plan:
    """What a mode measures: the models (write_llama's keywords), the estimate step's loads
    (model, n_ctx, n_gpu_layers), the model and tokens of the speed step, the pool's model shape and
    context, and the layers the speed, pool and vulkan steps offload."""

    models: dict[str, dict]
    loads: list[tuple[str, int, Any]]
    speed_model: str
    n_gen: int
    pool_shape: dict
    n_ctx: int
    offload: Any


SMALL = dict(n_layer=18, n_embd=640, n_head=5, n_head_kv=1, n_ff=2048)  # the demo's size: 110M parameters
LARGE = dict(n_layer=16, n_embd=2048, n_head=16, n_head_kv=4, n_ff=8192, n_ctx_train=131072)  # 1.0B parameters
PLANS = {
    "gpu": Plan(models={"small": SMALL, "large": LARGE},
                loads=[("small", n_ctx, ngl) for n_ctx in (4096, 32768) for ngl in (0, 9, "all")]
                + [("large", n_ctx, ngl) for n_ctx in (4096, 131072) for ngl in (0, 8, "all")],
                speed_model="large", n_gen=256, pool_shape=SMALL, n_ctx=4096, offload="all"),
    "cpu": Plan(models={"small": dict(n_layer=2, n_embd=128), "large": dict(n_layer=4, n_embd=256, n_ff=512)},
                loads=[(model, n_ctx, 0) for model in ("small", "large") for n_ctx in (1024, 4096)],
                speed_model="large", n_gen=32, pool_shape=dict(n_layer=2, n_embd=128), n_ctx=1024, offload=0),
}


@dataclass
class Context:
    """What every step is given: the mode, its plan, where the models and the steps' files go (work),
    and where what comes back goes (out)."""

    gpu: bool
    work: Path
    out: Path

    @property
    def plan(self) -> Plan:
        return PLANS["gpu" if self.gpu else "cpu"]

    def model(self, name: str) -> Path:
        return self.work / "models" / f"{name}.gguf"

    def pool_models(self) -> list[Path]:
        return [self.model(f"pooled-{n}") for n in range(3)]

    def in_use(self) -> int:
        """Bytes in use as the system sees them: GPU 0's memory by its driver, else this process's RSS."""
        if not self.gpu:
            from llamahost.bench.procfs import rss_bytes

            return rss_bytes()
        return int(nvidia_smi("memory.used")[0]) * MiB

    @property
    def seen_by(self) -> str:
        return "nvidia-smi memory.used (GPU 0)" if self.gpu else "the process's RSS"


def nvidia_smi(*fields: str) -> list[str]:
    out = subprocess.run(["nvidia-smi", "-i", "0", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [value.strip() for value in out.strip().split(",")]


def write_models(ctx: Context) -> dict:
    """The plan's models, in Q8_0, unless an earlier call wrote them."""
    (ctx.work / "models").mkdir(parents=True, exist_ok=True)
    shapes = {ctx.model(name): (shape, 0) for name, shape in ctx.plan.models.items()}
    shapes |= {path: (ctx.plan.pool_shape, n) for n, path in enumerate(ctx.pool_models())}
    for path, (shape, seed) in shapes.items():
        if not path.exists():
            written = synthetic.write_llama(path.with_suffix(".partial"), weight_type="Q8_0", shared_weights=True,
                                            seed=seed, **shape)
            written.rename(path)
    return {"bytes": {path.stem: path.stat().st_size for path in shapes}}


# -- the steps: each runs in a process of its own and returns {"ok", "summary", "figures"} --------------

def mapped_libraries(*names: str) -> list[str]:
    """The files of this process's mappings whose names start with one of ``names``: which CUDA
    runtime, cuBLAS, driver and Vulkan loader the backends found."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    return sorted(p for p in paths if os.path.basename(p).startswith(names))


def step_devices(ctx: Context) -> dict:
    before = ctx.in_use()  # no CUDA context in this process yet
    import llamahost

    info = llamahost.system_info()
    devices = llamahost.devices()  # queries each device's memory: the CUDA context is made here
    context_bytes = ctx.in_use() - before
    keep = ("backend", "active_backend", "cpu_variant", "unavailable_backends", "backends", "llama_cpp_build")
    figures: dict[str, Any] = {"system_info": {k: info[k] for k in keep}, "devices": devices,
                               "libraries": mapped_libraries("libcudart", "libcublas", "libcuda.", "libvulkan",
                                                             "libggml", "libllamahost")}
    in_use_ok = info["active_backend"] in info["backend"].split(",") and not info["unavailable_backends"]
    if not ctx.gpu:
        return {"ok": in_use_ok and bool(devices), "figures": figures,
                "summary": f"{info['active_backend']}: {', '.join(d['name'] for d in devices)}"}
    gpus = [d for d in devices if d["type"] == "gpu"]
    name, total, driver = nvidia_smi("name", "memory.total", "driver_version")
    figures.update(nvidia_smi={"name": name, "memory_total": int(total) * MiB, "driver": driver},
                   cuda_context_bytes=context_bytes)
    ok = in_use_ok and bool(gpus) and all(0 < d["memory_free"] <= d["memory_total"] for d in gpus)
    listed = "; ".join(f"{d['name']} {d['description']} {d['memory_total'] / MiB:.0f} MiB "
                       f"({d['memory_free'] / MiB:.0f} free)" for d in gpus) or "no GPU listed"
    return {"ok": ok, "figures": figures,
            "summary": f"{info['active_backend']}: {listed}; nvidia-smi: {name} {total} MiB, driver {driver}; "
                       f"the CUDA context takes {context_bytes / MiB:.0f} MiB"}


def compare(est, real) -> float:
    """The largest relative difference between an estimate and a real load, over devices and parts."""
    if [d.name for d in est.devices] != [d.name for d in real]:
        return float("inf")
    return max(abs(getattr(e, p) - getattr(r, p)) / max(getattr(r, p), 1)
               for e, r in zip(est.devices, real) for p in ("weights", "kv_cache", "compute"))


def step_estimate(ctx: Context) -> dict:
    import llamahost

    llamahost.devices()  # the CUDA context first: the devices step counts it, not the loads
    rows = []
    for model, n_ctx, n_gpu_layers in ctx.plan.loads:
        params = {"n_ctx": n_ctx, "n_gpu_layers": n_gpu_layers}
        est = llamahost.estimate(ctx.model(model), **params)
        before = ctx.in_use()
        with llamahost.Server(ctx.model(model), **params) as srv:
            loaded = ctx.in_use()
            real = srv.memory_breakdown()
            srv.complete(PROMPT, max_tokens=16, ignore_eos=True, cache_prompt=False)
            generated = ctx.in_use()
        counted = real[:-1] if ctx.gpu else real[-1:]  # the GPUs, or on the CPU build the host
        engine = sum(d.used for d in counted)
        rows.append({"model": model, "n_ctx": n_ctx, "n_gpu_layers": n_gpu_layers, "error": compare(est, real),
                     "estimate": [vars(d) for d in est.devices], "real": [vars(d) for d in real],
                     "engine_bytes": engine, "driver_after_load": loaded - before,
                     "driver_after_generation": generated - before})
    worst = max(rows, key=lambda r: r["error"])
    load_extra = [r["driver_after_load"] - r["engine_bytes"] for r in rows]
    gen_extra = [r["driver_after_generation"] - r["engine_bytes"] for r in rows]
    return {"ok": worst["error"] <= TOLERANCE, "figures": {"seen_by": ctx.seen_by, "loads": rows},
            "summary": f"{len(rows)} loads: estimate() within {worst['error']:.2%} of the load (worst: {worst['model']}, "
                       f"n_ctx {worst['n_ctx']}, n_gpu_layers {worst['n_gpu_layers']}); {ctx.seen_by} minus the "
                       f"engine's count: {min(load_extra) / MiB:+.0f} to {max(load_extra) / MiB:+.0f} MiB after "
                       f"loading, {min(gen_extra) / MiB:+.0f} to {max(gen_extra) / MiB:+.0f} MiB after a generation"}


def step_tests(ctx: Context) -> dict:
    if not ctx.gpu:  # no GPU to run them on: check that they are collected, and all in the file run on a GPU
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p",
                               "no:cacheprovider", str(ROOT / "tests")], capture_output=True, text=True, timeout=120)
        ids = [line for line in done.stdout.splitlines() if "::" in line]
        ok = done.returncode == 0 and bool(ids) and all(i.startswith("tests/test_gpu.py::") for i in ids)
        return {"ok": ok, "figures": {"collected": ids},
                "summary": f"{len(ids)} GPU-marked tests collected, all in tests/test_gpu.py" if ok
                           else f"collection failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"}
    report = ctx.out / "gpu_tests.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-rA",
                           f"--junitxml={report}", str(GPU_TESTS)], cwd=ROOT)  # bounded by the step's limit
    outcomes: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[outcome].append(case.get("name"))
    counts = ", ".join(f"{len(names)} {kind}" for kind, names in outcomes.items())
    return {"ok": done.returncode == 0, "figures": outcomes,
            "summary": counts + (f" ({', '.join(outcomes['failed'])})" if outcomes["failed"] else "")}


def timings_of(out: dict) -> dict:
    t = out["timings"]
    return {k: t[k] for k in ("prompt_n", "prompt_per_second", "predicted_n", "predicted_per_second")}


def completion_body(max_tokens: int) -> dict:
    return {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "cache_prompt": False}


def in_process_speed(ctx: Context, srv) -> dict:
    """A warm-up, then one completion of the plan's length: the engine's own timings."""
    srv.complete(**completion_body(8))
    return timings_of(srv.complete(**completion_body(ctx.plan.n_gen)))


def step_speed(ctx: Context) -> dict:
    import httpx

    import llamahost
    from llamahost.bench.peers import llama_server

    flags = ["-m", str(ctx.model(ctx.plan.speed_model)), "-c", "4096", "-np", "1", "-ngl", str(ctx.plan.offload),
             "-lv", "1"]
    with llamahost.Server.from_args([*flags, "--port", "0"]) as srv:  # alone on the device, then the peer alone
        ours = in_process_speed(ctx, srv)
    with llama_server(flags) as peer, httpx.Client(timeout=300) as client:
        client.post(peer.url + "/v1/completions", json=completion_body(8)).raise_for_status()
        done = client.post(peer.url + "/v1/completions", json=completion_body(ctx.plan.n_gen)).raise_for_status()
        theirs = timings_of(done.json())
    ratios = {k: ours[k] / theirs[k] for k in ("prompt_per_second", "predicted_per_second")}
    same_work = ours["prompt_n"] == theirs["prompt_n"] and ours["predicted_n"] == theirs["predicted_n"]
    return {"ok": same_work, "figures": {"flags": flags, "llamahost": ours, "llama-server": theirs, "ratio": ratios},
            "summary": f"{ctx.plan.speed_model} model, {ours['prompt_n']} prompt tokens: prompt "
                       f"{ours['prompt_per_second']:.0f} vs {theirs['prompt_per_second']:.0f} tokens/s "
                       f"({ratios['prompt_per_second']:.3f}x); generation of {ours['predicted_n']}: "
                       f"{ours['predicted_per_second']:.1f} vs {theirs['predicted_per_second']:.1f} tokens/s "
                       f"({ratios['predicted_per_second']:.3f}x), in-process vs llama-server"}


def step_pool(ctx: Context) -> dict:
    import llamahost

    params = {"n_ctx": ctx.plan.n_ctx, "n_gpu_layers": ctx.plan.offload}
    first, *_ = models = ctx.pool_models()
    with llamahost.Pool(idle_ttl=None) as probe:  # also sets up once what a first load sets up
        need = probe.get(first, **params).load().stats()["memory_bytes"]
    base = ctx.in_use()
    grown = []
    with llamahost.Pool(memory_budget=int(need * 2.5), idle_ttl=None) as pool:
        handles = [pool.get(m, **params) for m in models]
        for handle in handles:  # the third evicts the first, the least recently used
            handle.complete("x", max_tokens=1)
            grown.append(ctx.in_use() - base)
        states = [h.state for h in handles]
        evictions = [h.stats()["evictions"] for h in handles]
    one_model, third = grown[0], grown[2] - grown[1]
    ok = states == ["unloaded", "loaded", "loaded"] and evictions == [1, 0, 0] and third <= 0.25 * one_model
    return {"ok": ok, "figures": {"seen_by": ctx.seen_by, "need": need, "budget": int(need * 2.5), "grown": grown,
                                  "states": states, "evictions": evictions},
            "summary": f"budget {need * 2.5 / MiB:.0f} MiB for models needing {need / MiB:.0f} MiB each: states "
                       f"{states}, evictions {evictions}; {ctx.seen_by} grew {grown[0] / MiB:.0f}, "
                       f"{grown[1] / MiB:.0f}, {grown[2] / MiB:.0f} MiB after each load"}


def step_fallback(ctx: Context) -> dict:
    """The chain's own fallback on a GPU: CUDA loads but sees no device (CUDA_VISIBLE_DEVICES=-1, set by
    the step), as with a driver too old for the wheel's CUDA; Vulkan takes the same GPU."""
    import llamahost

    info, devices = llamahost.system_info(), llamahost.devices()
    gpus = [d for d in devices if d["type"] == "gpu" and d["backend"] == "Vulkan"]
    ok = info["active_backend"] == "vulkan" and list(info["unavailable_backends"]) == ["cuda"] and bool(gpus)
    return {"ok": ok, "figures": {"system_info": info, "devices": devices},
            "summary": f"{info['active_backend']} on {', '.join(d['description'] for d in gpus) or 'no Vulkan GPU'}; "
                       f"skipped: {info['unavailable_backends']}"}


def step_vulkan(ctx: Context) -> dict:
    """Vulkan forced (LLAMAHOST_BACKEND=vulkan, set by the step) on the GPU CUDA would take."""
    import llamahost

    small = ctx.model("small")
    params = {"n_ctx": 4096, "n_gpu_layers": "all"}
    est = llamahost.estimate(small, **params)
    with llamahost.Server(small, **params) as srv:
        error = compare(est, srv.memory_breakdown())
    with llamahost.Server(ctx.model(ctx.plan.speed_model), **params) as srv:
        speed = in_process_speed(ctx, srv)
    active = llamahost.system_info()["active_backend"]
    return {"ok": active == "vulkan" and error <= TOLERANCE,
            "figures": {"active_backend": active, "estimate_error": error, "speed": speed},
            "summary": f"{active}: estimate() within {error:.2%} of the load ({ctx.model('small').stem} model); "
                       f"{ctx.plan.speed_model} model: prompt {speed['prompt_per_second']:.0f} tokens/s, generation "
                       f"{speed['predicted_per_second']:.1f} tokens/s"}


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Context], dict]
    timeout: float  # seconds: the step's process and all it starts are killed then
    least: float  # seconds: with less left before the deadline, the step waits for another call
    gpu_only: bool = False
    env: dict[str, str] = field(default_factory=dict)


STEPS = [  # limits for the GPU machine; a step takes well under its limit (wheels/gpu_check.sh)
    Step("devices", step_devices, 60, 15),
    Step("estimate", step_estimate, 240, 90),
    Step("tests", step_tests, 300, 120),
    Step("speed", step_speed, 150, 60),
    Step("pool", step_pool, 120, 40),
    Step("fallback", step_fallback, 90, 20, gpu_only=True, env={"CUDA_VISIBLE_DEVICES": "-1"}),
    Step("vulkan", step_vulkan, 180, 60, gpu_only=True, env={"LLAMAHOST_BACKEND": "vulkan"}),
]


def run_step(step: Step, ctx: Context, argv: list[str], limit: float) -> dict:
    """The step in a process of its own, killed with everything it started after ``limit`` seconds."""
    result = ctx.work / f"step-{step.name}.json"
    result.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, *argv, "--step", step.name, "--result", str(result)],
                            env=os.environ | step.env, start_new_session=True)
    try:
        proc.wait(timeout=limit)
        why = f"exited with {proc.returncode} and no result"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        why = f"timed out after {limit:.0f} s"
    outcome = json.loads(result.read_text()) if result.exists() else {"ok": False, "summary": why, "figures": {}}
    outcome["seconds"] = time.monotonic() - start
    result.write_text(json.dumps(outcome, indent=1, default=str))
    return outcome


def run_here(step: Step, ctx: Context) -> dict:
    """The step itself (in the orchestrator's child): an exception is a failed step, with its traceback."""
    try:
        return step.run(ctx)
    except Exception as exc:  # noqa: BLE001 - any failure of the step is its result
        return {"ok": False, "summary": f"{type(exc).__name__}: {exc}", "figures": {"traceback": traceback.format_exc()}}


def print_summary(report: dict, path: Path) -> int:
    print(f"\n== gpu_check ({report['mode']}), {report['date']}: {report['machine']}")
    if report["build"]:
        print(f"build: {json.dumps(report['build'])}")
    print(f"models: {report['models']['bytes']} bytes, written in {report['models']['seconds']:.0f} s")
    for name, outcome in report["steps"].items():
        state = "ok" if outcome["ok"] else "SKIPPED" if outcome.get("skipped") else "FAILED"
        earlier = " (an earlier call's)" if outcome.get("earlier") else ""
        print(f"{name:9s} {state:7s} {outcome['seconds']:5.0f} s  {outcome['summary']}{earlier}")
    failed = [name for name, outcome in report["steps"].items() if not outcome["ok"]]
    print(f"{len(report['steps']) - len(failed)} of {len(report['steps'])} steps ok"
          + (f"; not ok: {', '.join(failed)}" if failed else "") + f"; {path}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true", help="the CPU build: small models, no GPU steps")
    parser.add_argument("--out", type=Path, required=True, help="for gpu_check.json and gpu_tests.xml")
    parser.add_argument("--work", type=Path, help="for the models and the steps' files (default: OUT/work)")
    parser.add_argument("--build-info", type=Path, help="a JSON of the build's figures, kept in gpu_check.json")
    parser.add_argument("--deadline", type=float, help="a time (epoch seconds) by which to have ended: a step "
                        "that cannot have its time is skipped, for a later call to run")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # one step, in this process (the orchestrator's child)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    ctx = Context(gpu=not args.cpu_only, work=(args.work or out / "work").resolve(), out=out)
    if args.step:
        step = next(s for s in STEPS if s.name == args.step)
        args.result.write_text(json.dumps(run_here(step, ctx), indent=1, default=str))
        return 0

    if not ctx.gpu:
        shutil.rmtree(ctx.work, ignore_errors=True)  # on the CPU, always the whole run: it checks the code
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.out.mkdir(parents=True, exist_ok=True)
    passed = ["--out", str(ctx.out), "--work", str(ctx.work)] + (["--cpu-only"] if args.cpu_only else [])
    start = time.monotonic()
    report: dict[str, Any] = {
        "mode": "gpu" if ctx.gpu else "cpu", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "build": json.loads(args.build_info.read_text()) if args.build_info else None,
        "models": write_models(ctx) | {"seconds": time.monotonic() - start, "plan": vars(ctx.plan)},
        "steps": {},
    }
    path = ctx.out / "gpu_check.json"
    for step in STEPS:
        if step.gpu_only and not ctx.gpu:
            continue
        earlier = ctx.work / f"step-{step.name}.json"
        left = (args.deadline - time.time() - 5) if args.deadline else step.timeout
        if earlier.exists() and json.loads(earlier.read_text())["ok"]:  # a GPU run called again: done already
            outcome = json.loads(earlier.read_text()) | {"earlier": True}
        elif left < step.least:
            outcome = {"ok": False, "skipped": True, "seconds": 0, "figures": {},
                       "summary": f"{left:.0f} s left of this call, {step.least:.0f} s needed: call it again"}
        else:
            outcome = run_step(step, ctx, passed, min(step.timeout, left))
        report["steps"][step.name] = outcome
        path.write_text(json.dumps(report, indent=1, default=str))  # after each step: what a cut call leaves
        print(f"[gpu-check] {step.name}: {'ok' if outcome['ok'] else 'not ok'} ({outcome['seconds']:.0f} s)", flush=True)
    return print_summary(report, path)


if __name__ == "__main__":
    sys.exit(main())
