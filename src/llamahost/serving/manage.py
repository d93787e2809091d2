"""The management API of the multi-model endpoint (docs/API.md) and the dashboard page over it
(``/dashboard``). Beside upstream's router API, with which it shares its implementation (the
router's loads, unloads, pulls and removals, and its events on ``/models/sse``): the devices with
their memory and what each loaded model holds there, the library, Hub search, a repository's
quantizations with a verdict for this machine before any download (models/remote.py), estimates
and a configuration that fits, models loaded with given parameters (kept as presets in
llama-server's ``--models-preset`` format), per-model figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from ..core import config
from ..core.devices import devices, system_info
from ..core.transport import Chunks, Response
from ..errors import LlamahostError, ModelNotFoundError, ModelReferenceError
from ..gguf.info import inspect
from ..models.hub import search_models
from ..models.library import Library
from ..models.remote import verdicts
from ..models.resolve import resolve
from ..planning.estimate import estimate
from . import presets
from .metrics import engine_series

if TYPE_CHECKING:
    from ..models.library import LibraryModel  # noqa: F401 - in the protocol's signatures
    from .events import Events
    from .pool import Handle
    from .pulls import Pulls

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
         "/dashboard/": ("dashboard.html", "text/html; charset=utf-8"),
         "/dashboard/app.js": ("dashboard.js", "application/javascript"),
         "/dashboard/style.css": ("dashboard.css", "text/css")}
LONGEST_PROPOSED_CONTEXT = 32768  # a proposal, not a limit: the user may ask for more


@dataclass(frozen=True)
class Call:
    """A request to one of the router's own routes: its query (each name's first value), its
    JSON body, and the model it names (``?model=`` or the body's ``model``)."""

    query: dict[str, str]
    body: Any
    headers: Mapping[str, str]

    @property
    def model(self) -> Any:
        if isinstance(self.body, dict) and self.body.get("model") is not None:
            return self.body["model"]
        return self.query.get("model")


class ManagedModels(Protocol):
    """What the API asks of the router whose models it manages (serving.router.Router)."""

    pulls: "Pulls"
    events: "Events"
    presets_path: Path | None

    def served(self) -> dict[str, "Handle"]: ...
    def sources(self) -> dict[str, str]: ...
    def add(self, name: str, model: str, own_args: Sequence[str] = (), *, source: str = "preset",
            replace: bool = False) -> "Handle": ...
    def model_file(self, name: str) -> str | None: ...
    def load_soon(self, name: str, handle: "Handle") -> None: ...
    def save_preset(self, name: str, args: Sequence[str]) -> None: ...
    def load(self, call: Call) -> Response: ...
    def unload(self, call: Call) -> Response: ...
    def pull(self, call: Call) -> Response: ...
    def delete(self, call: Call) -> Response: ...


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, "application/json; charset=utf-8", {}, json.dumps(data).encode())


def _error(status: int, kind: str, message: str) -> Response:
    return _json({"error": {"code": status, "message": message, "type": kind}}, status)


class Manage:
    """The API and the page, for one router."""

    def __init__(self, router: ManagedModels):
        self.router = router

    def route(self, method: str, path: str, call: Call) -> tuple[Response, Chunks | None]:
        if method == "GET" and path in PAGES:
            name, content_type = PAGES[path]
            return Response(200, content_type, {"Cache-Control": "no-cache"}, (STATIC / name).read_bytes()), None
        handler = self._routes().get((method, path))
        if handler is None:
            return _error(404, "not_found_error", f"no route {method} {path}"), None
        try:
            return handler(call), None
        except (ModelNotFoundError, FileNotFoundError) as exc:
            return _error(404, "not_found_error", str(exc)), None
        except (ValueError, TypeError, KeyError, ModelReferenceError) as exc:
            return _error(400, "invalid_request_error", str(exc)), None
        except LlamahostError as exc:  # the Hub, a download, a model the engine refuses
            return _error(502, "upstream_error", str(exc)), None

    def _routes(self) -> dict[tuple[str, str], Callable[[Call], Response]]:
        r = self.router
        return {("GET", "/api/devices"): self.devices, ("GET", "/api/library"): self.library,
                ("DELETE", "/api/library"): self.remove, ("GET", "/api/hub/search"): self.search,
                ("GET", "/api/hub/files"): self.files, ("POST", "/api/estimate"): self.estimate,
                ("POST", "/api/propose"): self.propose, ("GET", "/api/pulls"): lambda call: _json(r.pulls.active()),
                ("POST", "/api/pulls"): r.pull, ("DELETE", "/api/pulls"): self.cancel,
                ("GET", "/api/models"): self.models, ("POST", "/api/models"): self.serve,
                ("POST", "/api/models/load"): r.load, ("POST", "/api/models/unload"): r.unload,
                ("GET", "/api/presets"): self.presets}

    # -- what is here ----------------------------------------------------------------------------

    def devices(self, call: Call) -> Response:
        """Each device, its memory now, and what each loaded model holds on it (by its plan)."""
        held = {name: handle.stats()["memory_by_device"] for name, handle in self.router.served().items()}
        found = []
        for device in devices():
            key = "CPU" if device["type"] == "cpu" else device["name"]
            models = [{"model": name, "bytes": by_device[key]} for name, by_device in held.items() if by_device.get(key)]
            found.append(dict(device, models=models))
        return _json({"devices": found, "llama_cpp": system_info()["llama_cpp_build"]})

    def library(self, call: Call) -> Response:
        served = self.router.served()
        return _json([dict(m.as_dict(), served=m.name in served) for m in Library().models()])

    def remove(self, call: Call) -> Response:
        """A pulled model out of the library (unloaded and no longer served first, if it was)."""
        name = _text(call.model, "model")
        if self.router.sources().get(name) == "cache":
            return self.router.delete(call)
        library = Library()
        library.remove(library.one(name))
        self.router.events.publish(name, "model_remove")
        return _json({"success": True})

    def search(self, call: Call) -> Response:
        found = search_models(_text(call.query.get("q"), "q"), limit=int(call.query.get("limit", 20)))
        return _json([m.as_dict() for m in found])

    def files(self, call: Call) -> Response:
        """A repository's quantizations, each with its verdict for this machine, from headers alone."""
        params = _params(call.query, ("n_ctx", "parallel"))
        found = verdicts(_text(call.query.get("repo"), "repo"), **params)
        return _json({"repo": call.query["repo"], "params": params, "fetched": sum(v.fetched for v in found),
                      "quantizations": [v.as_dict() for v in found]})

    # -- configurations that fit ---------------------------------------------------------------

    def _path(self, model: Any) -> str:
        """A served model's file, else that of a model on disk (a path or a library name)."""
        ref = _text(model, "model")
        return self.router.model_file(ref) or str(resolve(ref, download=False).path)

    def estimate(self, call: Call) -> Response:
        path = self._path(call.model)
        return _json(estimate(path, **_server_params(call.body)).as_dict())

    def propose(self, call: Call) -> Response:
        """Parameters that fit this machine's devices for a model on disk: one slot, as much context
        as fits (up to the trained context and LONGEST_PROPOSED_CONTEXT), the GPU layers the
        engine's fitting gives, and an 8-bit KV cache where f16 leaves less than 4096 tokens."""
        path = self._path(call.model)
        trained = inspect(path).n_ctx_train or 4096
        params: dict[str, Any] = {"parallel": 1, "n_gpu_layers": "auto", "cache_type_k": "f16", "cache_type_v": "f16"}
        est = estimate(path, n_ctx=min(trained, 4096), **params)
        if est.max_ctx < 4096:
            params.update(cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on")
            est = estimate(path, n_ctx=min(trained, 4096), **params)
        params["n_ctx"] = max(min(est.max_ctx, trained, LONGEST_PROPOSED_CONTEXT), 256)
        return _json({"params": params, "estimate": estimate(path, **params).as_dict()})

    # -- models ----------------------------------------------------------------------------------

    def models(self, call: Call) -> Response:
        out = []
        for name, handle in self.router.served().items():
            stats = handle.stats()
            figures = engine_series(handle)[1]
            out.append({"name": name, "state": stats["state"], "source": self.router.sources().get(name),
                        "args": handle.args, "memory_bytes": stats["memory_bytes"],
                        "memory_by_device": stats["memory_by_device"], "requests": stats["requests"],
                        "in_flight": stats["in_flight"], "waiting": stats["waiting"],
                        "tokens_per_second": figures.get("llamacpp:predicted_tokens_seconds", 0.0),
                        "deferred": figures.get("llamacpp:requests_deferred", 0.0)})
        return _json(out)

    def serve(self, call: Call) -> Response:
        """Serve a model (one served already, or one on disk: a path or a library name) with these
        Server parameters, load it, and keep them as its preset: the router serves it so again
        next time. A model served from the same file under that name is served so from now on."""
        body = call.body if isinstance(call.body, dict) else {}
        ref = _text(call.model, "model")
        resolved = resolve(self.router.model_file(ref) or ref, download=False)
        name = _text(body.get("name") or (ref if self.router.model_file(ref) else resolved.name), "name")
        own = config.flags(resolved.server_params(_server_params(body)))
        handle = self.router.add(name, str(resolved.path), own, replace=True,
                                 source="cache" if resolved.source == "library" else "preset")
        self.router.save_preset(name, ["--model", str(resolved.path), *own])
        self.router.load_soon(name, handle)
        return _json({"success": True, "name": name})

    def cancel(self, call: Call) -> Response:
        name = _text(call.model, "model")
        if not self.router.pulls.cancel(name):
            return _error(404, "not_found_error", f"no pull of {name} in progress")
        return _json({"success": True})

    def presets(self, call: Call) -> Response:
        path = self.router.presets_path
        return _json({"path": str(path), "presets": presets.read(path) if path else {},
                      "ini": path.read_text(encoding="utf-8") if path and path.exists() else ""})


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _params(query: dict[str, str], names: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for name in names:
        if name in query:
            if not query[name].isdigit():
                raise ValueError(f"{name} must be a whole number, got {query[name]!r}")
            out[name] = int(query[name])
    return out


def _server_params(body: Any) -> dict[str, Any]:
    params = body.get("params", {}) if isinstance(body, dict) else {}
    if not isinstance(params, dict):
        raise ValueError("params must be an object of Server parameters")
    return params
