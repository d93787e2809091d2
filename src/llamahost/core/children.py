"""Processes this package starts that must not outlive it (a pool's workers, RPC workers): the
parent keeps their stdin open, and a child acts when it closes, which happens however the parent
ends, even by SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Callable


class ChildProcess:
    """What a handle on such a child shares: its process (``proc``), pid and whether it runs."""

    proc: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


def when_parent_goes(action: Callable[[], None]) -> None:
    """In the child: call ``action`` (on a thread of its own) once stdin closes."""
    def watch() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed our stdin, or died
        action()

    threading.Thread(target=watch, name="llamahost-parent-watch", daemon=True).start()
