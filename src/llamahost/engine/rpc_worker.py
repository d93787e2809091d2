"""ggml RPC workers: this machine's devices offered to llama.cpp processes on other machines.

``serve_rpc()`` serves them in this process until it ends (what ``llamahost rpc-server`` runs);
``RPCWorker`` starts that in a process of its own and stops it (``python -m
llamahost.engine.rpc_worker``). A server uses workers with ``rpc=["host:port", ...]``.

The protocol has no authentication and no encryption: whoever reaches the port can run graphs
on the devices and read their memory. A worker listens on loopback unless told otherwise, and
warns when it is. Every machine must run the same llamahost (the same llama.cpp build): a
client refuses a worker of another protocol version.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import warnings
from typing import Sequence

from ..core import _native, rpc, security
from ..core.children import ChildProcess, when_parent_goes
from ..core.transport import free_port
from ..models.home import home_dir

DEFAULT_PORT = 50052  # upstream's rpc-server's


class ExposedRPCWorkerWarning(security.ExposedServerWarning):
    """An RPC worker listens on an address other machines can reach (it has no authentication)."""


def serve_rpc(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, devices: Sequence[str] = (),
              threads: int | None = None, cache: bool = False) -> None:
    """Serve this machine's ``devices`` (names as ``llamahost devices`` lists them; default:
    every GPU, else the CPU) over ggml RPC on ``host:port`` until the process ends. ``cache``
    keeps a copy of large tensors sent to it under the llamahost home (``rpc-cache/``), so a
    client sending the same weights again sends their hash instead. Raises ValueError for an
    unknown device, RuntimeError when it cannot listen."""
    endpoint = f"{host}:{port}"
    rpc.split_endpoint(endpoint)
    if not security.is_loopback(host):
        warnings.warn(f"the RPC worker listens on {host}: anyone who can reach {endpoint} can run code on its "
                      "devices and read their memory (ggml RPC has no authentication); listen on a private "
                      "network only", ExposedRPCWorkerWarning, stacklevel=2)
    cache_dir = ""
    if cache:
        cache_dir = str(home_dir() / "rpc-cache")
        os.makedirs(cache_dir, exist_ok=True)
    _native.serve_rpc(endpoint, cache_dir, threads or max(1, (os.cpu_count() or 2) // 2), list(devices))


class RPCWorker(ChildProcess):
    """``serve_rpc`` in a process of its own (``port=0``: a free one), ready when the object is:
    its devices answer the protocol's handshake. ``endpoint`` is what ``rpc=`` takes; ``close()``
    (or leaving ``with``) stops it, as does the end of this process (the worker stops when its
    stdin closes)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, devices: Sequence[str] = (),
                 threads: int | None = None, cache: bool = False, timeout: float = 60.0):
        self.host = host
        self.port = port or free_port()
        self.endpoint = f"{host}:{self.port}"
        argv = [sys.executable, "-m", "llamahost.engine.rpc_worker", "--host", host, "--port", str(self.port)]
        argv += ["--device", ",".join(devices)] if devices else []
        argv += ["--threads", str(threads)] if threads else []
        argv += ["--cache"] if cache else []
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        try:
            self.devices = self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> list[rpc.RemoteDevice]:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                reason = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"the RPC worker on {self.endpoint} exited with status {self.proc.returncode}: "
                                   f"{reason[-1] if reason else ''}")
            try:
                return rpc.remote_devices(self.endpoint, timeout=5.0)
            except rpc.RPCWorkerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """End the worker at once (SIGKILL), as a machine that fails would."""
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> "RPCWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<llamahost.RPCWorker {self.endpoint}, pid {self.pid}{'' if self.running else ', stopped'}>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``llamahost rpc-server``'s options, upstream's rpc-server's names."""
    parser.add_argument("--host", "-H", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                        "the protocol has no authentication: never a public network)")
    parser.add_argument("--port", "-p", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--device", "-d", default="", help="devices to offer, comma-separated, as `llamahost "
                        "devices` names them (default: every GPU, else the CPU)")
    parser.add_argument("--threads", "-t", type=int, help="threads for the CPU device (default: half the cores)")
    parser.add_argument("--cache", "-c", action="store_true", help="keep large tensors sent here under the "
                        "llamahost home, so that a client sends their hash next time")


def run(args: argparse.Namespace) -> int:
    """Serve until a signal (Ctrl-C, SIGTERM) ends the process; 2 where it cannot start."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the server blocks in C++: let a signal end the process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(f"llamahost: RPC worker on {args.host}:{args.port}, protocol {'.'.join(map(str, rpc.PROTOCOL))}; "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        serve_rpc(args.host, args.port, devices=[d for d in args.device.split(",") if d], threads=args.threads,
                  cache=args.cache)
    except (ValueError, RuntimeError) as exc:
        print(f"llamahost rpc-server: {exc}", file=sys.stderr, flush=True)
    return 2  # it returns only when it could not start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m llamahost.engine.rpc_worker")
    add_arguments(parser)
    when_parent_goes(lambda: os._exit(0))  # the server blocks in C++ until the process ends
    os._exit(run(parser.parse_args()))  # not sys.exit: the interpreter's shutdown would wait for that thread
