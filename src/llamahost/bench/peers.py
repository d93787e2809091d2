"""Peers to compare with: upstream's binaries built from our own vendor/llama.cpp (CMake option
LLAMAHOST_BUILD_PEERS, found in a source checkout's build tree) and servers run as processes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ..core.transport import free_port

ROOT = Path(__file__).resolve().parents[3]  # the source checkout of an editable install


def peer_binary(name: str) -> Path:
    found = sorted(ROOT.glob(f"build/*/peers/{name}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"{name} not found under {ROOT}/build: it is built in a source checkout with "
                           "LLAMAHOST_BUILD_PEERS=ON (the default of pip install -e .)")
    return found[-1]


def _parent_death_signal():
    """Linux: a function for the child, between fork and exec, that asks for SIGTERM when the
    thread that started it ends (a benchmark worker that failed). Looked up here, before the
    fork: the child must not import or load anything."""
    if sys.platform != "linux":
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Running:
    """A server process on a loopback port, stopped on exit."""

    def __init__(self, argv: list[str], port: int, timeout: float = 120, ready_path: str = "/health"):
        self.url = f"http://127.0.0.1:{port}"
        # a file, not a pipe: a server logging each request would block once an unread pipe filled
        # (llama-server at its default verbosity, after some 150 requests)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log,
                                     preexec_fn=_parent_death_signal())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {self.proc.returncode}: {self._closed_log_tail()}")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        raise TimeoutError(f"{argv[0]} did not become healthy in {timeout} s: {self._closed_log_tail()}")

    def _closed_log_tail(self, size: int = 2000) -> str:
        self.log.seek(max(0, self.log.seek(0, 2) - size))
        tail = self.log.read().decode("utf-8", "replace")
        self.log.close()
        return tail

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def llama_server(flags: list[str]) -> Running:
    port = free_port()
    return Running([str(peer_binary("llama-server")), *flags, "--port", str(port)], port)


def llamahost_serve(flags: list[str]) -> Running:
    port = free_port()
    return Running([sys.executable, "-m", "llamahost", "serve", *flags, "--port", str(port)], port)
