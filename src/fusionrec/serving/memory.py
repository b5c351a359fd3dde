"""Keeping a long-running server's resident memory flat: fewer glibc malloc arenas, and freed heap
pages handed back to the OS.

A multi-threaded Python server (the event loop, the events writer, the retrain, DuckDB's threads)
gets a glibc arena per thread that allocates, up to 8 per core, and glibc returns the free pages in
the middle of an arena to the OS only on `malloc_trim`. Both make RSS creep up under steady traffic
although nothing leaks. Elsewhere than glibc these calls do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging

__all__ = ["limit_malloc_arenas", "trim_heap", "release_memory"]

log = logging.getLogger("fusionrec.serving")

_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_malloc_arenas(n: int = 2) -> bool:
    """At most `n` malloc arenas for threads made from now on (call before starting threads)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, n) == 1)


def trim_heap() -> None:
    """Give the free pages of every arena back to the OS (milliseconds for a few hundred MB)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def release_memory() -> None:
    """After a swap: collect the old model's cycles, then trim (the loading thread's arena keeps the
    freed buffers otherwise, and the server would grow at every swap)."""
    gc.collect()
    trim_heap()
