"""Where a server's memory sits in glibc's heap (Linux with glibc; elsewhere nothing to do).

Left alone, glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, so
the buffers of a model loaded later come from the heap, where a closed server leaves fragments
(4 to 16 MiB over 50 small servers, varying). While a model loads the threshold is 1 MiB: a
server's buffers get mappings of their own, which close() unmaps. Between loads it is 32 MiB,
where glibc's own adaptation ends up, so the blocks a request allocates and frees (a sampler's
candidates: 3 MiB for a 262k vocabulary) are reused from the heap; at 1 MiB throughout, such a
request could pay for a fresh mapping each time, 0.2 to 0.25 ms. The trim threshold stays at
glibc's 128 KiB: raising it with the mmap threshold, as glibc's adaptation does, left 1 to 9 MiB
behind over 50 servers. Where the user tuned malloc themselves (MALLOC_*_ variables,
GLIBC_TUNABLES) the thresholds are theirs.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from functools import cache
from typing import Iterator

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LOADING_MMAP_THRESHOLD = 1 << 20
SERVING_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for its own adaptation (64-bit)

_lock = threading.Lock()
_loads_in_progress = 0


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None  # not glibc


def _user_tuned() -> bool:
    return any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) or \
        "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


@contextmanager
def loading() -> Iterator[None]:
    """Around a model's load; loads may overlap (a pool loads several models at once)."""
    global _loads_in_progress
    libc = _libc()
    if libc is None or _user_tuned():
        yield
        return
    with _lock:
        if _loads_in_progress == 0:
            libc.mallopt(M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD)
        _loads_in_progress += 1
    try:
        yield
    finally:
        with _lock:
            _loads_in_progress -= 1
            if _loads_in_progress == 0:
                libc.mallopt(M_MMAP_THRESHOLD, SERVING_MMAP_THRESHOLD)


def return_freed() -> None:
    """After a server closed: glibc keeps what it freed for reuse (100 MiB and more for a 270M
    model); malloc_trim hands it back to the system."""
    if _libc() is not None:
        _libc().malloc_trim(0)
