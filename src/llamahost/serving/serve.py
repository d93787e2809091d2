"""One model served in this process until a signal stops it: what ``llamahost serve MODEL`` and
a pool's worker process (``python -m llamahost.serving.worker``) run."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from ..engine.server import Server
from ..errors import LlamahostError


def serve(args: list[str]) -> int:
    """llama-server's command line, served until SIGINT or SIGTERM: 0 after a clean stop, 1 when
    the server stopped by itself, 2 when it could not start (the reason on stderr)."""
    with stop_on_signals() as stop:
        try:
            server = Server.from_args(args, rpc_in_process=True)  # this process serves this model alone
        except (ValueError, OSError, RuntimeError, LlamahostError) as exc:  # LlamahostError: a model the engine refuses
            print(f"llamahost serve: {exc}", file=sys.stderr)
            return 2
        try:
            print(f"llamahost: serving {server.model_path} at {server.url} (OpenAI API under {server.url}/v1); "
                  "Ctrl-C stops", flush=True)
            while not stop.wait(0.5):
                if not server.running:
                    print("llamahost: the server stopped", file=sys.stderr)
                    return 1
        finally:
            print("llamahost: stopping ...", flush=True)
            server.close()
    return 0


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets; a second signal exits at once."""
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if stop.is_set():  # a second Ctrl-C: do not wait for a clean stop
            os._exit(130)
        stop.set()

    # installed even where SIGINT was ignored (a background job), as llama-server does
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
