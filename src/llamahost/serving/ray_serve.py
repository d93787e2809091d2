"""Many models behind one OpenAI-compatible endpoint on a Ray cluster, with Ray Serve.

    from ray import serve
    from llamahost.serving.ray_serve import build

    serve.run(build({"chat": "chat.gguf", "embed": {"model": "bert.gguf", "embedding": True}},
                    params={"n_ctx": 4096}, models_per_replica=2,
                    autoscaling_config={"min_replicas": 1, "max_replicas": 4}))

or with Ray's own command line: ``serve run llamahost.serving.ray_serve:app models=chat=chat.gguf``
(the arguments of ``AppArgs``).

Two deployments. ``Endpoint``, the ingress, reads a request's ``model`` field and hands the
request, unchanged, to a ``Models`` replica through Ray Serve's model multiplexing, which
prefers a replica that already holds that model. A ``Models`` replica serves its models from
a ``Pool`` (thread isolation by default: the route handlers are called in the replica's own
process, with no second HTTP hop). Ray's multiplexer decides which models a replica holds, at
most ``models_per_replica``, the least recently used going first; the pool loads them within a
budget that is what the replica reserved from Ray: the engine's estimate of the largest
``models_per_replica`` models, as the pool itself counts them (prompt cache at its limit), host
bytes as Ray's ``memory`` and each GPU's bytes as a share of that GPU, so that Ray packs
several small models on one GPU. Replicas autoscale on their ongoing requests.
"""

import asyncio
import json
import math
import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, AsyncIterator, Mapping, Sequence

try:
    import ray
    from pydantic import BaseModel, ConfigDict, field_validator
    from ray import serve
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    from starlette.requests import Request
    from starlette.responses import Response as HTTPResponse
    from starlette.responses import StreamingResponse
except ImportError as exc:
    raise ImportError(f"llamahost.serving.ray_serve needs Ray Serve: pip install 'llamahost[ray]' ({exc})") from None

from ..chat.messages import send_normalized
from ..core import cmdline, rpc
from ..core.security import key_matches
from ..core.transport import Chunks, Response, aiter_in_thread, in_thread
from ..engine.rpc_worker import RPCWorker
from ..engine.server import command_line
from ..errors import LlamahostError, ModelLoadError
from ..planning.estimate import Estimate, engine_dry_run, from_engine
from .pool import Handle, Pool, _bounded_prompt_cache
from .router import PUBLIC_PATHS, _error, models_in_dir

REPLICA_HEADER = "x-llamahost-replica"  # which Models replica answered: its Ray actor's name
REPLICA_DIED = (RayActorError, ActorUnavailableError)


# -- what a replica needs ------------------------------------------------------------------------

def model_specs(models: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                args: Sequence[str] = ()) -> dict[str, dict]:
    """name -> {"model", "params", "args"}: what a replica's ``pool.get`` takes for each model.
    A model is a reference (path, folder, library name, Hub reference) or a dict with one under
    ``"model"`` and its own Server parameters (and ``"args"``, more llama-server flags) over
    ``params`` and ``args``. Each model answers under its name (``alias``)."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping of names to models, got {models!r}")
    specs = {}
    for name, model in models.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a model name must be a non-empty string, got {name!r}")
        own = dict(model) if isinstance(model, Mapping) else {"model": model}
        ref = own.pop("model", None)
        if not isinstance(ref, (str, os.PathLike)) or not os.fspath(ref):
            raise ValueError(f"model {name!r}: expected a model reference, got {model!r}")
        flags = [str(a) for a in args] + [str(a) for a in own.pop("args", ())]
        specs[name] = {"model": os.fspath(ref), "params": {**(params or {}), "alias": name, **own}, "args": flags}
    return specs


def estimate_spec(spec: dict) -> Estimate:
    """The engine's dry run of the command line a pool builds for this model (``Pool.get``): what
    the pool's budget counts (``worst_case_bytes``, ``_needs``), per device."""
    args = command_line(spec["model"], _bounded_prompt_cache(spec["params"])) + spec["args"]
    path = cmdline.read(args)["model"]
    try:
        return from_engine(path, engine_dry_run(args))
    except RuntimeError as exc:
        raise ModelLoadError(path, str(exc)) from None


def gpu_share(est: Estimate) -> float:
    """The GPUs a model takes: the fraction of its GPU's memory, or whole GPUs when it is split."""
    gpus = [d for d in est.devices[:-1] if d.used and not rpc.is_remote(d.name)]  # RPC workers' are theirs
    if len(gpus) > 1:
        return float(len(gpus))
    return gpus[0].used / gpus[0].total if gpus else 0.0


def replica_resources(estimates: Sequence[Estimate], models_per_replica: int) -> dict[str, Any]:
    """What a replica holding at most ``models_per_replica`` of these models can come to need, its
    largest ones: ``memory`` (host bytes, Ray's resource), ``num_gpus`` (Ray's, a fraction of one
    GPU or whole GPUs), and ``budget``, all devices' bytes together (its pool's memory budget)."""
    def largest(values):
        return sum(sorted(values, reverse=True)[:models_per_replica])

    gpus = largest(gpu_share(e) for e in estimates)
    return {"memory": largest(e.devices[-1].worst_case for e in estimates),
            "num_gpus": math.ceil(gpus) if gpus > 1 else math.ceil(gpus * 10_000) / 10_000,  # Ray's precision
            "budget": largest(e.worst_case_bytes for e in estimates)}


# -- the deployments -----------------------------------------------------------------------------

@serve.deployment
class Models:
    """A replica: the models Ray's multiplexer gives it, served from a Pool."""

    async def __init__(self, specs: dict[str, dict], budget: int, models_per_replica: int, isolation: str,
                       max_ongoing_requests: int, rpc_bundles: Sequence[dict] = ()):
        # each request in flight holds a thread while the engine works on it; Ray sizes the loop's
        # default pool by num_cpus, which would queue requests the engine could batch
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_ongoing_requests + 2, thread_name_prefix="llamahost-ray"))
        self.specs = specs
        self.pool = Pool(budget, idle_ttl=None, isolation=isolation)
        self.replica = serve.get_replica_context().replica_id.to_full_id_str()
        # the RPC workers of this replica's placement group, one a bundle after the replica's own
        group = ray.util.get_current_placement_group()
        self._rpc_actors = [RPCWorkerActor.options(
            name=f"{self.replica}:rpc{i}", namespace="serve",
            num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0), memory=bundle.get("memory"),
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i + 1),
        ).remote(max(1, int(bundle.get("CPU", 1)))) for i, bundle in enumerate(rpc_bundles)]
        self.rpc = [await actor.endpoint.remote() for actor in self._rpc_actors]

        async def hold(name: str) -> Handle:
            # Ray's multiplexer calls an evicted handle's __del__ (close): the pool then unloads
            # that model when the next one needs its room
            return await in_thread(self._load, name)

        self._model = serve.multiplexed(max_num_models_per_replica=models_per_replica)(hold)

    def _load(self, name: str) -> Handle:
        spec = with_rpc(self.specs[name], self.rpc)
        handle = self.pool.get(spec["model"], args=spec["args"], **spec["params"])
        try:
            return handle.load()
        except BaseException:
            handle.close()
            raise

    async def _send(self, method: str, target: str, body: bytes) -> tuple[Response, Chunks | None]:
        name = serve.get_multiplexed_model_id()
        try:
            handle = await self._model(name)
            return await in_thread(send_normalized, handle, method, target, body)
        except LlamahostError as exc:  # the model could not be loaded
            return _error(503, "unavailable_error", f"model '{name}' is unavailable: {exc}"), None

    async def request(self, method: str, target: str, body: bytes) -> tuple[str, Response]:
        """The whole answer, and which replica gave it."""
        response, chunks = await self._send(method, target, body)
        if chunks is not None:
            response.body = await in_thread(b"".join, chunks)
        return self.replica, response

    async def stream(self, method: str, target: str, body: bytes) -> AsyncIterator[Any]:
        """Which replica answers, the answer (its head, or all of it if it is not a stream) and
        whether a stream follows; then the stream's chunks. A request cancelled (its client
        gone) cancels the generation."""
        response, chunks = await self._send(method, target, body)
        yield self.replica, response, chunks is not None
        if chunks is not None:
            async for chunk in aiter_in_thread(chunks):
                yield chunk

    def __del__(self) -> None:
        self.pool.close()


@ray.remote
class RPCWorkerActor:
    """An RPC worker (``llamahost.RPCWorker``, a process of its own) on this actor's node,
    listening on the node's address, for the models of one replica."""

    def __init__(self, threads: int):
        self.worker = RPCWorker(host=ray.util.get_node_ip_address(), threads=threads)

    def endpoint(self) -> str:
        return self.worker.endpoint

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()
    # the worker stops with this actor's process: its stdin closes (RPCWorker)


def with_rpc(spec: dict, endpoints: Sequence[str]) -> dict:
    """The spec with its model split over these RPC workers (none: as it is)."""
    return dict(spec, args=[*spec["args"], "--rpc", ",".join(endpoints)]) if endpoints else spec


@serve.deployment
class Endpoint:
    """The OpenAI-compatible ingress: a request goes to the replica holding the model it names."""

    def __init__(self, models: DeploymentHandle, names: list[str], api_key: str | None = None):
        self.models = models
        self.names = list(names)
        self.api_keys = [key for key in api_key.split(",") if key] if api_key else []
        self.created = int(time.time())

    async def __call__(self, request: Request) -> HTTPResponse:
        # the path within the application: Ray Serve's scope holds its route prefix as root_path
        path, method = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/", request.method
        if path in PUBLIC_PATHS:
            return _http(Response(200, "application/json", {}, b'{"status": "ok"}'))
        key = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
        if self.api_keys and not key_matches(key.removeprefix("Bearer "), self.api_keys):
            return _http(_error(401, "authentication_error", "Invalid API Key"))
        if method == "GET" and path in ("/v1/models", "/models"):
            data = [{"id": name, "object": "model", "owned_by": "llamahost", "created": self.created}
                    for name in self.names]
            return _http(Response(200, "application/json", {}, json.dumps({"object": "list", "data": data}).encode()))
        body = await request.body()
        name, stream = request.query_params.get("model"), False
        if method == "POST" and body:
            try:
                fields = json.loads(body)
            except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
                return _http(_error(400, "invalid_request_error", f"the body is not JSON: {exc}"))
            if isinstance(fields, dict):
                name = fields.get("model") or name
                stream = fields.get("stream") is True
        if not name:
            return _http(_error(400, "invalid_request_error", "model name is missing from the request"))
        if name not in self.names:
            return _http(_error(404, "not_found_error", f"model '{name}' not found; see /v1/models"))
        target = path + ("?" + request.url.query if request.url.query else "")
        models = self.models.options(multiplexed_model_id=name)
        try:
            if stream:
                chunks = models.options(stream=True).stream.remote(method, target, body)
                replica, response, streamed = await chunks.__anext__()
                return _http(response, replica, _relay(chunks, name) if streamed else None)
            replica, response = await models.request.remote(method, target, body)
            return _http(response, replica)
        except REPLICA_DIED as exc:
            return _http(_unavailable(name, exc))


def _unavailable(name: str, exc: BaseException) -> Response:
    return _error(503, "unavailable_error", f"model '{name}' is unavailable: its replica stopped "
                                            f"({type(exc).__name__}); the next request goes to another")


async def _relay(chunks: DeploymentResponseGenerator, name: str) -> AsyncIterator[bytes]:
    """A stream's chunks; if its replica dies mid-stream, a last event with the 503 error. A client
    that leaves cancels this request, and Ray cancels the replica's with it: the generation stops."""
    try:
        async for chunk in chunks:
            yield chunk
    except REPLICA_DIED as exc:
        yield b"data: " + _unavailable(name, exc).body + b"\n\n"


def _http(response: Response, replica: str | None = None, chunks: AsyncIterator[bytes] | None = None) -> HTTPResponse:
    headers = dict(response.headers, **({REPLICA_HEADER: replica} if replica else {}))
    if chunks is not None:
        return StreamingResponse(chunks, response.status, headers, media_type=response.content_type)
    return HTTPResponse(response.body, response.status, headers, media_type=response.content_type)


# -- building the application --------------------------------------------------------------------

def build(models: Mapping[str, Any], *, params: Mapping[str, Any] | None = None, args: Sequence[str] = (),
          models_per_replica: int = 1, autoscaling_config: Mapping[str, Any] | None = None,
          max_ongoing_requests: int = 8, isolation: str = "thread", num_cpus: float = 1.0,
          api_key: str | None = None, rpc_workers: int = 0, rpc_worker_resources: Mapping[str, float] | None = None,
          placement_strategy: str = "SPREAD") -> serve.Application:
    """The Ray Serve application serving ``models`` (see ``model_specs``) on one endpoint.

    ``models_per_replica``: how many models a replica holds at once (Ray's multiplexing);
    its reservation is the engine's estimate of that many of the largest models, made here,
    on the machine building the application. ``autoscaling_config``: Ray Serve's, over
    ``min_replicas=1, max_replicas=1, target_ongoing_requests=2``. ``max_ongoing_requests``:
    per replica, beyond which Ray queues requests. ``isolation``: the replicas' pools'.
    ``api_key``: one or several, comma-separated, asked of every request but /health.

    ``rpc_workers``: split each replica's model over that many RPC workers (``llamahost
    rpc-server``) besides the replica, scheduled with it as one Ray placement group (the replica
    in the first bundle, a worker in each other; ``placement_strategy``: Ray's, ``"STRICT_SPREAD"``
    for a machine each), started by the replica on their nodes. A worker's bundle is
    ``rpc_worker_resources`` (default one CPU; ``{"GPU": 1}`` for a GPU worker) and the memory the
    engine's estimate puts on its device, made here with workers on this machine (the split
    follows free memory unless ``tensor_split`` is given: give it where the nodes differ). A
    replica then holds one model (a worker serves one client at a time).
    """
    if not isinstance(models_per_replica, int) or models_per_replica < 1:
        raise ValueError(f"models_per_replica must be an int >= 1, got {models_per_replica!r}")
    if isolation not in ("thread", "process"):
        raise ValueError(f"isolation must be 'thread' or 'process', not {isolation!r}")
    specs = model_specs(models, params, args)
    if rpc_workers and models_per_replica != 1:
        raise ValueError("with rpc_workers a replica holds one model (models_per_replica=1): an RPC worker serves "
                         "one client at a time")
    with ExitStack() as stack:  # the split's estimate needs workers to ask: on this machine, for the time it takes
        local = [stack.enter_context(RPCWorker(threads=1)).endpoint for _ in range(rpc_workers)]
        estimates = [estimate_spec(with_rpc(spec, local)) for spec in specs.values()]
    needs = replica_resources(estimates, models_per_replica)
    actor = {"num_cpus": num_cpus, "memory": needs["memory"], "num_gpus": needs["num_gpus"]}
    placement: dict[str, Any] = {}
    worker_bundles = [{"CPU": 1.0, **(rpc_worker_resources or {}),
                       "memory": max(d.worst_case for e in estimates for d in e.devices if d.name == f"RPC{i}")}
                      for i in range(rpc_workers)]
    if worker_bundles:
        replica_bundle = {"CPU": num_cpus, "memory": needs["memory"]}
        if needs["num_gpus"]:
            replica_bundle["GPU"] = needs["num_gpus"]
        placement = {"placement_group_bundles": [replica_bundle, *worker_bundles],
                     "placement_group_strategy": placement_strategy}
    replicas = Models.options(
        ray_actor_options=actor,
        autoscaling_config={"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 2,
                            **(autoscaling_config or {})},
        max_ongoing_requests=max_ongoing_requests, **placement,
    ).bind(specs, needs["budget"], models_per_replica, isolation, max_ongoing_requests, worker_bundles)
    # the ingress only passes requests on, asynchronously: no CPU of its own, no limit of its own
    return Endpoint.options(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100_000).bind(
        replicas, list(specs), api_key)


class AppArgs(BaseModel):
    """``serve run llamahost.serving.ray_serve:app KEY=VALUE ...`` (or a Serve config file's
    ``args``): build()'s keywords, with the models and the flags as text."""

    model_config = ConfigDict(extra="forbid")

    models: str | dict[str, Any] = ""  # "name=model,name2=model2"; a config file's: a mapping, as build()'s
    models_dir: str | None = None  # read as `llamahost serve --models-dir` reads a folder
    args: str = ""  # llama-server flags for every model, verbatim: "-c 4096 --parallel 4"
    models_per_replica: int = 1
    autoscaling_config: dict[str, Any] | None = None  # on the command line, JSON
    max_ongoing_requests: int = 8
    isolation: str = "thread"
    num_cpus: float = 1.0
    api_key: str | None = None
    rpc_workers: int = 0
    rpc_worker_resources: dict[str, float] | None = None  # on the command line, JSON
    placement_strategy: str = "SPREAD"

    @field_validator("autoscaling_config", "rpc_worker_resources", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


def app(args: AppArgs) -> serve.Application:
    """Ray's application builder: ``serve run llamahost.serving.ray_serve:app models=a=a.gguf,b=b.gguf``."""
    models: dict[str, Any] = {}
    if args.models_dir:
        models.update({name: {"model": str(path), "args": flags}
                       for name, (path, flags) in models_in_dir(os.path.expanduser(args.models_dir)).items()})
    if isinstance(args.models, dict):
        models.update(args.models)
    elif args.models:
        for pair in args.models.split(","):
            name, sep, model = pair.partition("=")
            if not sep:
                raise ValueError(f"models: {pair!r} is not NAME=MODEL")
            models[name.strip()] = model.strip()
    if not models:
        raise ValueError("no models: give models=NAME=MODEL,... or models_dir=DIR")
    return build(models, args=shlex.split(args.args), models_per_replica=args.models_per_replica,
                 autoscaling_config=args.autoscaling_config, max_ongoing_requests=args.max_ongoing_requests,
                 isolation=args.isolation, num_cpus=args.num_cpus, api_key=args.api_key, rpc_workers=args.rpc_workers,
                 rpc_worker_resources=args.rpc_worker_resources, placement_strategy=args.placement_strategy)
