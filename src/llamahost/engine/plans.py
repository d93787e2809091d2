"""What upstream's fitting chose for a load, remembered, so that the next load with the same
command line gives it as options and skips the fitting (a pass over the model about as long as
a load without allocation).

The engine fits before it loads (core/_engine.cpp ``fit_before_load``) only where the fitting
could change something: never when the context size is given and, with a GPU, the GPU layers
too. A plan is kept under the llamahost home (``plans/``), keyed by the command line (but for
where the server listens, its alias and where it saves slots), the
``LLAMA_ARG_*`` variables, each file the command line names (path, size, modification time),
llama.cpp's build and the devices (names and total memory). It is used only while each device's
free memory is within ``free_margin`` of what it was when the plan was made (at most 2% of the
device, at least 256 MiB: well inside the 1 GiB the fitting leaves free on each device).
Fittings that moved tensors of a mixture of experts to the host are not remembered (no option
gives those choices back)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Sequence

from ..core.cmdline import take_option
from ..core.devices import devices, system_info
from ..models.home import home_dir

VERSION = 1
MOST_PLANS = 512  # the oldest go first


def free_margin(total: int) -> int:
    return max(256 << 20, total // 50)


def key(args: Sequence[str]) -> str:
    for where in ("--port", "--host", "--alias", "--slot-save-path"):  # where it listens, its name, its files
        _, args = take_option(args, where)
    stamps = []
    for arg in args:
        try:
            st = os.stat(arg)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode):
            stamps.append((os.path.abspath(arg), st.st_size, st.st_mtime_ns))
    info = system_info()
    variables = sorted((k, v) for k, v in os.environ.items() if k.startswith("LLAMA_ARG_"))
    blob = json.dumps([VERSION, info["llama_cpp_build"], info["llama_cpp_commit"], list(args), variables, stamps,
                       [(d["name"], d["memory_total"]) for d in devices()]])
    return hashlib.sha256(blob.encode()).hexdigest()


def planned(args: Sequence[str]) -> tuple[list[str], str]:
    """``args``, followed by a remembered plan's options where one holds; and the plan's key."""
    plan_key = key(args)
    try:
        plan = json.loads(_path(plan_key).read_text(encoding="utf-8"))
        options, then = list(plan["options"]), dict(plan["free"])
    except (OSError, ValueError, KeyError, TypeError):
        return list(args), plan_key
    now = {d["name"]: d for d in devices()}
    for name, free in then.items():
        device = now.get(name)
        if device is None or abs(device["memory_free"] - free) > free_margin(device["memory_total"]):
            return list(args), plan_key
    return [*args, *options], plan_key


def remember(plan_key: str, fitted: dict | None) -> None:
    """Keep what a fitting chose (the engine's ``fitted()``, or an estimate's ``fitted``) under ``plan_key``."""
    if not fitted or not fitted.get("as_options"):
        return
    options = ["--ctx-size", str(fitted["n_ctx"])]
    if fitted["n_gpu_layers"] != -1:  # -1, "auto": the default, and no GPU layers were chosen
        options += ["--n-gpu-layers", "all" if fitted["n_gpu_layers"] == -2 else str(fitted["n_gpu_layers"])]
    if any(fitted["tensor_split"]):
        options += ["--tensor-split", ",".join(repr(float(share)) for share in fitted["tensor_split"])]
    options += ["--fit", "off"]
    path = _path(plan_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        part.write_text(json.dumps({"options": options, "free": fitted["free"]}), encoding="utf-8")
        os.replace(part, path)
        _prune(path.parent)
    except OSError:
        pass  # a plan not kept only makes the next load fit again


def _prune(folder: Path) -> None:
    kept = []
    for plan in folder.glob("*.json"):
        try:
            kept.append((plan.stat().st_mtime_ns, plan))
        except OSError:
            continue
    for _, old in sorted(kept)[:-MOST_PLANS]:
        old.unlink(missing_ok=True)


def _path(plan_key: str) -> Path:
    return home_dir() / "plans" / f"{plan_key}.json"
