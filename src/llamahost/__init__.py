"""llamahost: llama.cpp's own server inside your Python process.

    import llamahost as lh
    with lh.Server("model.gguf", n_ctx=4096) as srv:
        srv.chat([{"role": "user", "content": "hi"}], max_tokens=32)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
                     AmbiguousModelError,
                     APIError,
                     ChecksumError,
                     DownloadError,
                     GatedModelError,
                     InvalidModelError,
                     LlamahostError,
                     ModelLoadError,
                     ModelNotFoundError,
                     ModelReferenceError,
                     RPCWorkerError,
                     ServerClosedError,
)

# imported when first used: `import llamahost` stays light (bench/cold_start.py measures it)
_LAZY = {
    ".chat.messages": ("Normalized", "normalize_messages"),
    ".core.devices": ("devices", "system_info", "use_backend"),
    ".core.transport": ("Response",),
    ".engine.rpc_worker": ("RPCWorker", "serve_rpc"),
    ".engine.server": ("Server",),
    ".engine.template": ("ChatTemplate", "chat_template"),
    ".engine.tokens": ("TokenCount", "count_tokens", "estimate_tokens"),
    ".gguf.info": ("ModelInfo", "inspect"),
    ".models.hub": ("list_quantizations", "pull", "search_models"),
    ".models.library": ("list_models", "remove_model"),
    ".models.resolve": ("ResolvedModel", "resolve"),
    ".planning.estimate": ("DeviceEstimate", "Estimate", "MemoryEstimate", "estimate", "estimate_gpu_layers"),
    ".serving.pool": ("Handle", "Pool"),
    ".serving.provider": ("Provider",),
    ".serving.router": ("Router",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from .chat.messages import Normalized, normalize_messages
    from .core.devices import devices, system_info, use_backend
    from .core.transport import Response
    from .engine.rpc_worker import RPCWorker, serve_rpc
    from .engine.server import Server
    from .engine.template import ChatTemplate, chat_template
    from .engine.tokens import TokenCount, count_tokens, estimate_tokens
    from .gguf.info import ModelInfo, inspect
    from .models.hub import list_quantizations, pull, search_models
    from .models.library import list_models, remove_model
    from .models.resolve import ResolvedModel, resolve
    from .planning.estimate import DeviceEstimate, Estimate, MemoryEstimate, estimate, estimate_gpu_layers
    from .serving.pool import Handle, Pool
    from .serving.provider import Provider
    from .serving.router import Router


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'llamahost' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "APIError", "DeviceEstimate", "Estimate", "Handle", "Router", "InvalidModelError", "LlamahostError", "ModelInfo",
    "MemoryEstimate", "ModelLoadError", "Pool", "Response", "Server", "ServerClosedError", "devices", "estimate",
    "estimate_gpu_layers", "inspect",
    "AmbiguousModelError", "ChecksumError", "DownloadError", "GatedModelError", "ModelNotFoundError",
    "ModelReferenceError", "ResolvedModel", "list_models", "list_quantizations", "pull", "remove_model", "resolve",
    "search_models",
    "ChatTemplate", "Normalized", "Provider", "TokenCount", "chat_template", "count_tokens", "estimate_tokens",
    "normalize_messages",
    "RPCWorker", "RPCWorkerError", "serve_rpc",
    "system_info", "use_backend", "__version__",
]
