"""llamahost: llama.cpp's own server inside your Python process.

    import llamahost as lh
    with lh.Server("model.gguf", n_ctx=4096) as srv:
        srv.chat([{"role": "user", "content": "hi"}], max_tokens=32)
"""

from .devices import devices, system_info, use_backend
from .estimate import DeviceEstimate, Estimate, MemoryEstimate, estimate, estimate_gpu_layers
from .modelinfo import ModelInfo, inspect
from .errors import APIError, InvalidModelError, LlamahostError, ModelLoadError, ServerClosedError
from .errors import (AmbiguousModelError, ChecksumError, DownloadError, GatedModelError, ModelNotFoundError,
                     ModelReferenceError)
from .hub import list_quantizations, pull, search_models
from .library import list_models, remove_model
from .models import ResolvedModel, resolve
from .client import Response
from .pool import Handle, Pool
from .server import Server
from .messages import Normalized, normalize_messages
from .template import ChatTemplate, chat_template
from .tokens import TokenCount, count_tokens, estimate_tokens
from .provider import Provider

__version__ = "0.1.0"

__all__ = [
    "APIError", "DeviceEstimate", "Estimate", "Handle", "InvalidModelError", "LlamahostError", "ModelInfo",
    "MemoryEstimate", "ModelLoadError", "Pool", "Response", "Server", "ServerClosedError", "devices", "estimate",
    "estimate_gpu_layers", "inspect",
    "AmbiguousModelError", "ChecksumError", "DownloadError", "GatedModelError", "ModelNotFoundError",
    "ModelReferenceError", "ResolvedModel", "list_models", "list_quantizations", "pull", "remove_model", "resolve",
    "search_models",
    "ChatTemplate", "Normalized", "Provider", "TokenCount", "chat_template", "count_tokens", "estimate_tokens",
    "normalize_messages",
    "system_info", "use_backend", "__version__",
]
