"""What this build of llama.cpp found on this machine."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from . import _native
from . import rpc as remote


def devices(rpc: str | list[str] | None = None) -> list[dict]:
    """The ggml devices: name, description, type, backend, memory_total, memory_free (bytes).
    ``rpc``: RPC workers (host:port) whose devices follow, named as a server using them names
    them (RPC0, RPC1, ... in the order given; the worker in the description), asked over the
    protocol without registering them in this process (RPCWorkerError: a worker unusable)."""
    found = json.loads(_native.devices())
    if rpc is not None:
        found += [{"name": f"RPC{i}", "description": d.endpoint, "type": "rpc", "backend": "RPC",
                   "memory_total": d.memory_total, "memory_free": d.memory_free}
                  for i, d in enumerate(remote.check(rpc))]
    return found


@lru_cache(maxsize=1)
def _static_info() -> dict:
    return json.loads(_native.system_info())


def system_info() -> dict:
    """The build's backend and the one in use (with the CPU variant loaded, and why a GPU backend
    could not be used), the ggml backends and CPU features found, and the llama.cpp version."""
    info = dict(_static_info())
    features = info.get("features", {})
    loaded = json.loads(_native.backends())
    return {
        "backend": _native.BACKEND,
        "active_backend": loaded["active"],
        "cpu_variant": loaded["cpu_variant"] or None,
        "unavailable_backends": loaded["unavailable"],
        "backends": info["backends"],
        "cpu_features": features.get("CPU", {}),
        "features": features,
        "llama_cpp_build": f"b{info['llama_cpp_build']}",
        "llama_cpp_commit": info["llama_cpp_commit"],
        "compiler": info["compiler"],
        "build_target": info["build_target"],
        "system_info": info["system_info"],
    }


def use_backend(name: str) -> None:
    """Compute with this ggml backend for the rest of the process (``"cpu"``: no GPU), as
    ``LLAMAHOST_BACKEND=name`` does; worker processes started later inherit the choice. Call it
    before anything else of llamahost's uses the engine. Raises ValueError for an unknown name,
    RuntimeError when that backend cannot be used here or this process already uses another."""
    _native.use_backend(name)
    os.environ["LLAMAHOST_BACKEND"] = name
