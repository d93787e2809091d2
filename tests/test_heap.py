"""glibc's mmap threshold: 1 MiB while a model loads (its buffers get mappings of their own, which
close() unmaps), 32 MiB between loads (a request's transient blocks are reused from the heap)."""

from __future__ import annotations

import ctypes

import pytest

import llamahost
from llamahost.core import heap


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@pytest.fixture(scope="module")
def libc():
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def mapped_by_malloc(libc, size: int) -> bool:
    """Whether a block of ``size`` bytes gets a mapping of its own (glibc counts those in hblks)."""
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblks == before + 1
    libc.free(block)
    return mapped


SIZE = 24 << 20  # between the two thresholds


def test_loads_map_large_blocks_and_serving_reuses_the_heap(libc):
    with heap.loading():
        assert mapped_by_malloc(libc, SIZE)
        with heap.loading():  # a pool loads several models at once: the first to finish changes nothing
            pass
        assert mapped_by_malloc(libc, SIZE)
    assert not mapped_by_malloc(libc, SIZE)


def test_a_server_leaves_the_serving_threshold(libc, tiny_model):
    with llamahost.Server(tiny_model, n_ctx=256) as srv:
        srv.complete("x", max_tokens=1)
        assert not mapped_by_malloc(libc, SIZE)


def test_thresholds_the_user_set_are_left_alone(libc, monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
    libc.mallopt(heap.M_MMAP_THRESHOLD, 32 << 20)  # what that variable does at start-up
    with heap.loading():
        assert not mapped_by_malloc(libc, SIZE)  # a load did not lower the user's threshold
