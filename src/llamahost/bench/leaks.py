"""Servers created and closed in a loop: what a process keeps of each (RSS, threads)."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

from ..engine.server import Server
from .procfs import os_threads, rss_bytes


def create_close(model: str | Path, times: int) -> dict:
    """``times`` servers of ``model`` created, asked one token and closed, after one warm-up (what
    a first load sets up once stays): RSS and threads before and after."""
    with Server(model, n_ctx=256) as srv:
        srv.complete("x", max_tokens=1)
    gc.collect()
    before, threads, py_threads = rss_bytes(), os_threads(), set(threading.enumerate())
    started = time.monotonic()
    for _ in range(times):
        with Server(model, n_ctx=256) as srv:
            srv.complete("x", max_tokens=1)
    gc.collect()
    after = rss_bytes()
    return {"model": str(model), "servers": times, "seconds": round(time.monotonic() - started, 1),
            "rss_before": before, "rss_after": after, "rss_growth_mib": round((after - before) / 2**20, 2),
            "os_threads_before": threads, "os_threads_after": os_threads(),
            "python_threads_left": sorted(t.name for t in set(threading.enumerate()) - py_threads)}
