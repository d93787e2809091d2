"""Process isolation: one model served by a worker process started from this same package.

The parent starts ``python -m llamahost.serving.worker ARGS``, which serves llama-server's
command line (on a loopback port the parent chose) as ``llamahost serve`` does, with one more rule:
the worker stops when its stdin closes, so it never outlives its parent, however the
parent ends (even by SIGKILL). The parent talks to it over HTTP as ``Worker``.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import re
from collections import deque

from ..core.children import ChildProcess, when_parent_goes
from ..core.cmdline import take_option
from ..core.transport import health_status
from ..engine.client import HTTPClient
from ..errors import ModelLoadError, ServerClosedError
from .serve import serve


# ggml's abort: "path/file.cpp:566: message", then a backtrace
_FATAL = re.compile(r"^\S+\.(?:c|cc|cpp|cu|m|mm):\d+: (.+)$")


class Worker(ChildProcess, HTTPClient):
    """A worker process serving ``args`` (llama-server's command line) on ``127.0.0.1:port``;
    returns once it answers /health, or raises ServerClosedError once ``cancel`` is set. The
    calls of ``Client`` go to it over HTTP."""

    def __init__(self, args: list[str], port: int, *, model_path: str = "?", api_key: str | None = None,
                 load_timeout: float = 600.0, cancel: threading.Event | None = None):
        _, args = take_option(args, "--host")  # a worker listens on loopback only (the pool gives the port)
        argv = [sys.executable, "-m", "llamahost.serving.worker", *args, "--host", "127.0.0.1", "--port", str(port)]
        self.model_path = model_path
        self.port = port
        # its own session: a Ctrl-C in the terminal reaches the parent, which stops its workers in order
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._fatal: str | None = None
        self._stderr_reader = threading.Thread(target=self._read_stderr, name=f"llamahost-worker-{self.pid}-stderr",
                                               daemon=True)
        self._stderr_reader.start()
        super().__init__(f"http://127.0.0.1:{port}", api_key=api_key)
        try:
            self._wait_ready(load_timeout, cancel)
        except BaseException:
            self.close()
            raise

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(text)
            if self._fatal is None and (found := _FATAL.match(text)):
                self._fatal = found[1]  # what llama.cpp aborted with, before its backtrace
            print(f"[worker {self.pid}] {text}", file=sys.stderr)

    @property
    def exit_reason(self) -> str | None:
        """Why the worker ended, from its log: its own error, or what llama.cpp aborted with;
        None while it runs."""
        if self.running:
            return None
        self._stderr_reader.join(timeout=2)
        own = next((line.removeprefix("llamahost serve: ") for line in reversed(self._stderr_tail)
                    if line.startswith("llamahost serve: ")), None)
        return own or self._fatal or (self._stderr_tail[-1] if self._stderr_tail else f"exit status {self.proc.returncode}")

    def _wait_ready(self, timeout: float, cancel: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise ServerClosedError(f"{self.model_path}: closed while the model was loading")
            code = self.proc.poll()
            if code is not None:
                raise ModelLoadError(self.model_path, f"the worker process exited with status {code}: {self.exit_reason}")
            try:
                if health_status(self.url, 5.0) == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass  # not listening yet, or not answering: a wedged worker meets the deadline below
            if time.monotonic() > deadline:
                raise ModelLoadError(self.model_path, f"the worker process was not ready in {timeout:.0f} s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, for a worker that stopped answering."""
        if self.running:
            self.proc.kill()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (cleanly, or by SIGKILL after ``timeout`` seconds) and wait for it."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the worker stops when its stdin closes
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr_reader.join()
        super().close()


def main(argv: list[str]) -> int:
    when_parent_goes(lambda: os.kill(os.getpid(), signal.SIGTERM))  # serve's own clean stop
    return serve(argv)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the parent-watch thread blocks on stdin, which the interpreter's shutdown would wait for
