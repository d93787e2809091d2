"""The ``llamahost`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from itertools import takewhile
from pathlib import Path

from ._version import __version__
from .core.cmdline import read as read_command_line
from .core.cmdline import take_option
from .engine import rpc_worker
from .models.home import home_dir

SERVE_HELP = """\
usage: llamahost serve [MODEL] [llama-server options ...]
       llamahost serve MODEL MODEL ... [options ...]
       llamahost serve [MODEL ...] --models-dir DIR [options ...]

Serve MODEL (a GGUF path) with llama.cpp's own server, inside this process, on
http://127.0.0.1:8080 unless --host/--port say otherwise. With no model, serves the
demo model from the [demo] extra. Every llama-server option and LLAMA_ARG_* variable
works as it does for llama-server; they are listed below. Ctrl-C stops.

Several models (two or more MODELs, or --models-dir) are served on one port: the
OpenAI "model" field of a request (or ?model= on a GET) names the model, by its file
name without .gguf, or by NAME when given as NAME=MODEL; /v1/models lists them, loaded
or not; /metrics has series per model and for the whole pool. A model loads on its
first request. The llama-server options after the models apply to every model; --host,
--port and --api-key are the endpoint's. Options of this mode:
  --models-dir DIR      serve each GGUF in DIR (named by its file) and each subfolder
                        holding a model (named by the folder; a projector beside it is used)
  --isolation MODE      thread (default): models in this process; process: one worker
                        process per model, restarted if it dies
  --memory-budget SIZE  e.g. 16GiB (default: the free memory); the least recently used
                        models are unloaded to make room for a model that would not fit
  --idle-ttl SECONDS    unload a model unused this long (default 300; 0: never)
  --slot-cache SIZE     conversations kept on disk when a model unloads, restored when it
                        loads again (default 2GiB; 0: none)
  --models-preset FILE  presets in llama-server's INI format (default: presets.ini in the
                        llamahost home): a model's saved options, and models of their own
  --dashboard           with one MODEL: serve it this way too (the dashboard, the model picker);
                        with no MODEL, the demo model is served this way, loaded at once
The endpoint serves llama.cpp's web UI at / and a dashboard of the models and devices at
/dashboard (its API: docs/API.md).

--rpc HOST:PORT,... (workers started with `llamahost rpc-server` on those machines) adds
their devices; a model using them is served from a worker process of its own, so that a
worker that stops answering fails that model's requests (503) and nothing else.
"""
MULTI_MODEL_OPTIONS = ("--models-dir", "--isolation", "--memory-budget", "--idle-ttl", "--models-preset",
                       "--slot-cache")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_devices(args: argparse.Namespace) -> int:
    from .core.devices import devices, system_info

    found = devices(rpc=args.rpc)
    if args.json:
        print(json.dumps({"devices": found, "system": system_info()}, indent=2))
        return 0
    info = system_info()
    print(f"llama.cpp {info['llama_cpp_build']} ({info['llama_cpp_commit']}), backend: {info['backend']}")
    print(f"{'NAME':<10} {'TYPE':<6} {'BACKEND':<8} {'FREE':>11} {'TOTAL':>11}  DESCRIPTION")
    for d in found:
        print(f"{d['name']:<10} {d['type']:<6} {d['backend']:<8} {_human(d['memory_free']):>11} "
              f"{_human(d['memory_total']):>11}  {d['description']}")
    cpu = [name for name, value in info["cpu_features"].items() if value == "1"]
    if cpu:
        print("CPU features: " + " ".join(cpu))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .gguf.info import inspect
    from .gguf.reader import ArraySummary
    from .models.resolve import resolve

    info = inspect(resolve(args.model).path)
    fields = {k: v for k, v in vars(info).items() if k not in ("metadata", "tensors", "parts", "path")}
    if args.json:
        meta = {k: repr(v) if isinstance(v, ArraySummary) else v for k, v in info.metadata.items()}
        print(json.dumps(dict(fields, path=str(info.path), parts=[str(p) for p in info.parts],
                              n_tensors=len(info.tensors), metadata=meta), indent=2, default=str))
        return 0
    print(f"{info.path}")
    for key, value in fields.items():
        if key == "chat_template":
            value = "none" if value is None else f"{len(value)} characters"
        elif key == "size_bytes":
            value = _human(value)
        elif key == "n_params":
            value = f"{value / 1e9:.2f} B" if value >= 1e9 else f"{value / 1e6:.0f} M"
        print(f"  {key:<14} {value}")
    print(f"  {'tensors':<14} {len(info.tensors)} in {len(info.parts)} file(s)")
    return 0


def _parse_device(text: str) -> dict:
    from .core.config import parse_size

    name, sep, size = text.partition("=")
    try:
        value = parse_size(size)
    except ValueError:
        value = None
    if not sep or not name or value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=SIZE, e.g. CUDA0=24GiB")
    return {"name": name, "memory_free": value, "memory_total": value}


def cmd_estimate(args: argparse.Namespace) -> int:
    from .models.resolve import resolve
    from .planning.estimate import estimate

    params = {"n_ctx": args.ctx, "parallel": args.parallel, "cache_type_k": args.cache_type_k,
              "cache_type_v": args.cache_type_v}
    resolved = resolve(args.model)
    params = resolved.server_params({k: v for k, v in params.items() if v is not None})
    ngl = args.gpu_layers if args.gpu_layers in ("auto", "all") else int(args.gpu_layers)
    est = estimate(resolved.path, devices=args.device or None, n_gpu_layers=ngl, method=args.method, **params)
    if args.json:
        print(json.dumps(est.as_dict(), indent=2))
        return 0
    print(f"{est.model}: n_ctx {est.n_ctx}, {est.n_gpu_layers} of {est.n_layers + 1} layers offloaded "
          f"({est.method})")
    print(f"{'DEVICE':<10} {'LAYERS':>6} {'WEIGHTS':>11} {'KV CACHE':>11} {'COMPUTE':>11} {'TOTAL':>11} {'FREE':>11}  FITS")
    for d in est.devices:
        print(f"{d.name:<10} {d.layers:>6} {_human(d.weights):>11} {_human(d.kv_cache):>11} {_human(d.compute):>11} "
              f"{_human(d.used):>11} {_human(d.free):>11}  {'yes' if d.fits else 'NO'}")
    for field, what in (("projector", "projector"), ("lora", "LoRA adapters"), ("draft", "draft model")):
        held = {d.name: getattr(d, field) for d in est.devices if getattr(d, field)}
        if held:
            print(f"  of which {what}: " + ", ".join(f"{name} {_human(n)}" for name, n in held.items()))
    print(f"total {_human(est.total_bytes)}; {'fits' if est.fits else 'does NOT fit'}; "
          f"largest context that fits: {est.max_ctx}")
    print(f"with the prompt cache at its limit (--cache-ram): {_human(est.worst_case_bytes)}")
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_pull(args: argparse.Namespace) -> int:
    from .models.hub import pull

    try:
        model = pull(args.ref)
    except KeyboardInterrupt:
        print("llamahost pull: interrupted; nothing was added to the library", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(model.as_dict(), indent=2))
        return 0
    print(f"{model.name}: {_human(model.size)}, {model.quantization}, {model.architecture}, "
          f"context {model.context_length}")
    print(f"  {model.path}" + (f"\n  projector {model.mmproj}" if model.mmproj else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .models.library import Library

    library = Library()
    for name in library.prune():
        print(f"llamahost list: dropped {name}: its files were deleted or changed", file=sys.stderr)
    models = library.models()
    if args.json:
        print(json.dumps([m.as_dict() for m in models], indent=2))
        return 0
    _table(("NAME", "SIZE", "QUANT", "ARCH", "CONTEXT", "PATH"),
           [(m.name, _human(m.size), m.quantization, m.architecture, str(m.context_length), str(m.path))
            for m in models])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .models.library import Library

    library = Library()
    model = library.one(args.ref)
    deleted = library.remove(model)
    if args.json:
        print(json.dumps({"name": model.name, "deleted": [str(p) for p in deleted]}, indent=2))
    else:
        print(f"removed {model.name}: " + ", ".join(str(p) for p in deleted) if deleted else
              f"removed {model.name} (its files stay: other models use them)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .errors import ModelNotFoundError
    from .models.hub import list_quantizations, parse_ref, search_models

    ref = parse_ref(args.query)
    if ref is not None and ref.tag is None and ref.file is None:  # a repository: its quantizations
        try:
            quants = list_quantizations(ref.repo)
        except ModelNotFoundError:
            quants = None
        if quants is not None:
            if args.json:
                print(json.dumps([q.as_dict() for q in quants], indent=2))
                return 0
            _table(("NAME", "SIZE", "FITS", "FILES"), [(q.name, _human(q.size), "yes" if q.fits else "no",
                                                        ", ".join(q.files)) for q in quants])
            return 0
    found = search_models(args.query, limit=args.limit)
    if args.json:
        print(json.dumps([m.as_dict() for m in found], indent=2))
        return 0
    _table(("REPOSITORY", "DOWNLOADS", "LIKES", "UPDATED", "GATED"),
           [(m.repo, str(m.downloads or 0), str(m.likes or 0),
             m.last_modified.date().isoformat() if m.last_modified else "-", "yes" if m.gated else "no")
            for m in found])
    return 0


def cmd_serve(argv: list[str]) -> int:
    from .core import _native, cmdline
    from .core.config import exiting_options
    from .serving.serve import serve

    if any(a in ("-h", "--help", "--usage") for a in argv):
        print(SERVE_HELP, flush=True)
        _native.usage()  # llama-server's full option list
        return 0
    models = list(takewhile(lambda arg: not arg.startswith("-"), argv))
    if len(models) > 1 or "--dashboard" in argv or take_option(argv, "--models-dir")[0] is not None:
        return cmd_serve_models(models, [a for a in argv[len(models):] if a != "--dashboard"])
    if exiting_options() & set(argv):  # --version, --list-devices, ...: as llama-server answers them
        sys.stdout.flush()
        _native.exit_as_llama_server(argv[len(models):])
    flags = list(argv)
    if flags and not flags[0].startswith("-"):
        from .models.resolve import resolve

        try:
            flags = resolve(flags[0]).server_flags(flags[1:])
        except (ValueError, OSError) as exc:
            print(f"llamahost serve: {exc}", file=sys.stderr)
            return 2
    try:
        named = cmdline.read(flags)["model"]
    except ValueError as exc:
        print(f"llamahost serve: {exc}", file=sys.stderr)
        return 2
    if not named:  # the demo, served with the dashboard (a named model keeps llama-server's own routes)
        from .models.demo import demo_model_path

        return cmd_serve_models([str(demo_model_path())], flags, load=True)
    if take_option(flags, "--rpc")[0] is not None:
        # through the pool, which serves it from a worker process: a lost RPC worker ends the
        # process using it (llama.cpp aborts), and this one answers for it instead
        rest = take_option(take_option(flags, "--model")[1], "-m")[1]
        return cmd_serve_models([named], rest, load=True)
    return serve(flags)


def _model_names(models: list[str], models_dir: str | None,
                 presets_path: Path) -> dict[str, tuple[str, list[str], str]]:
    """name -> (model, its own flags, where it came from: upstream's "preset" or "models_dir"),
    from NAME=MODEL or MODEL positionals, a models folder, and the presets that name a model."""
    from .core.cmdline import take_option
    from .serving import presets
    from .serving.router import models_in_dir

    found: list[tuple[str, str, list[str], str]] = []
    for model in models:
        name, sep, ref = model.partition("=")
        if not sep or not name or "/" in name or os.path.exists(model):  # MODEL alone: named by its file
            ref = model
            name = Path(model).name.removesuffix(".gguf") if model.endswith(".gguf") else model
        found.append((name, ref, [], "preset"))
    if models_dir:
        found += [(name, str(path), flags, "models_dir") for name, (path, flags) in models_in_dir(models_dir).items()]
    for name, args in presets.read(presets_path).items():
        model, _ = take_option(args, "--model")
        if model and name not in {n for n, *_ in found}:  # a model of its own (its options come with the preset)
            found.append((name, model, [], "preset"))
    named: dict[str, tuple[str, list[str], str]] = {}
    for name, ref, flags, source in found:
        if name in named:
            raise ValueError(f"two models named {name!r}: name one with NAME=MODEL")
        named[name] = (ref, flags, source)
    if not named:
        raise ValueError(f"no model to serve (none in {models_dir or 'the command line'} nor {presets_path})")
    return named


def cmd_serve_models(models: list[str], flags: list[str], *, load: bool = False) -> int:
    """Several models behind one endpoint (see SERVE_HELP); ``load``: load them now, not on first use."""
    from .errors import LlamahostError
    from .serving.pool import Pool
    from .serving.router import Router
    from .serving.serve import stop_on_signals

    try:
        options = {}
        for name in MULTI_MODEL_OPTIONS:
            options[name], flags = take_option(flags, name)
        host, flags = take_option(flags, "--host")
        port, flags = take_option(flags, "--port")
        cors_origins, flags = take_option(flags, "--cors-origins")
        ui = not {"--no-ui", "--no-webui"} & set(flags)
        presets_path = Path(options["--models-preset"] or home_dir() / "presets.ini")
        named = _model_names(models, options["--models-dir"], presets_path)
        idle_ttl = float(options["--idle-ttl"] or 300)
        pool = Pool(memory_budget=options["--memory-budget"], idle_ttl=idle_ttl or None,
                    isolation=options["--isolation"] or "thread", slot_cache=options["--slot-cache"] or "2GiB")
    except (ValueError, OSError) as exc:
        print(f"llamahost serve: {exc}", file=sys.stderr)
        return 2
    if "--metrics" not in flags:
        flags.append("--metrics")  # the models' own series in the endpoint's /metrics
    with stop_on_signals() as stop:
        try:
            router = Router(pool, {}, host=host or os.environ.get("LLAMA_ARG_HOST", "127.0.0.1"),
                            port=int(port or os.environ.get("LLAMA_ARG_PORT", 8080)),
                            api_key=",".join(read_command_line(flags)["api_keys"]) or None,
                            cors_origins=[o for o in (cors_origins or "").split(",") if o], ui=ui, model_args=flags,
                            presets_path=presets_path)
            try:
                for name, (model, own, source) in named.items():
                    handle = router.add(name, model, own, source=source)
                    if load:
                        router.load_soon(name, handle)
            except BaseException:
                router.close()
                raise
        except (ValueError, OSError, LlamahostError) as exc:
            pool.close()
            print(f"llamahost serve: {exc}", file=sys.stderr)
            return 2
        try:
            print(f"llamahost: serving {len(named)} model{'s' if len(named) > 1 else ''} at {router.url} (OpenAI API under {router.url}/v1, "
                  f"\"model\": {', '.join(named)}); {pool.isolation} isolation, memory budget "
                  f"{_human(pool.memory_budget)}; Ctrl-C stops", flush=True)
            stop.wait()
        finally:
            print("llamahost: stopping ...", flush=True)
            pool.close()  # requests in flight end with a 503
            router.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        return cmd_serve(argv[1:])  # llama-server's own parser reads the rest
    if argv and argv[0] == "bench":
        try:
            from .bench.run import main as bench_main
        except ModuleNotFoundError as exc:
            print(f"llamahost bench needs {exc.name}: pip install 'llamahost[bench]'", file=sys.stderr)
            return 2

        return bench_main(argv[1:])

    parser = argparse.ArgumentParser(
        prog="llamahost",
        description="llama.cpp's server inside Python: serve models, inspect devices.")
    parser.add_argument("--version", action="version", version=f"llamahost {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="serve a model (llama-server's options; `llamahost serve --help`)")
    sub.add_parser("bench", help="benchmark against llama-server, llama-bench, xllamacpp, llama-cpp-python")
    p = sub.add_parser("devices", help="list the devices and backends this build found")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--rpc", metavar="HOST:PORT,...", help="also the devices of these RPC workers")
    p.set_defaults(func=cmd_devices)
    p = sub.add_parser("rpc-server", help="offer this machine's devices to llama.cpp servers elsewhere (ggml RPC)")
    rpc_worker.add_arguments(p)
    p.set_defaults(func=rpc_worker.run)

    p = sub.add_parser("inspect", help="show a GGUF model's metadata (no weights loaded)")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON, with all metadata")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("estimate", help="memory per device for serving a model, and whether it fits")
    p.add_argument("model")
    p.add_argument("--ctx", "-c", type=int, help="context size (default: the model's trained context)")
    p.add_argument("--parallel", "-np", type=int, help="slots")
    p.add_argument("--cache-type-k", "-ctk")
    p.add_argument("--cache-type-v", "-ctv")
    p.add_argument("--gpu-layers", "-ngl", default="auto", help="a number, auto or all")
    p.add_argument("--device", action="append", type=_parse_device, metavar="NAME=SIZE",
                   help="plan for a device this machine lacks, e.g. CUDA0=24GiB (repeatable)")
    p.add_argument("--method", default="auto", choices=("auto", "dry run", "closed form"),
                   help="the engine's dry run, or metadata alone (auto: the dry run when the engine reads the model)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("pull", help="download a model from Hugging Face into the library")
    p.add_argument("ref", metavar="REF", help="org/repo (the best quantization that fits), org/repo:TAG, "
                                              "org/repo/FILE.gguf, or a pulled model (to update it)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("list", help="list the models in the library")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("rm", help="delete a model from the library")
    p.add_argument("ref", metavar="REF", help="a name from `llamahost list` (org/ may be left out)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("search", help="search Hugging Face for GGUF models; for org/repo, list its quantizations")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--limit", type=int, default=20, help="results (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_search)

    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"llamahost {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
