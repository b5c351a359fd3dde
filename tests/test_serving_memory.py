"""The server's memory upkeep calls glibc where it is there and never fails where it is not."""

from __future__ import annotations

import ctypes

from fusionrec.serving import memory


def _rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_trim_gives_freed_heap_back():
    if memory._libc() is None:  # not glibc: nothing to check but that it is harmless
        memory.trim_heap()
        return
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD high: glibc itself would not give the pages back
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD high: the blocks live in the heap, not in mmaps
    try:
        blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MB of heap, touched
        keep = blocks[-1]  # the top of the heap stays in use, so only a trim can free the middle
        before = _rss_kb()
        del blocks
        memory.trim_heap()
        assert _rss_kb() < before - 64 * 1024  # at least half of it went back to the OS
        del keep
    finally:
        libc.mallopt(-1, 128 * 1024)
        libc.mallopt(-3, 128 * 1024)


def test_limit_arenas_is_accepted():
    assert memory.limit_malloc_arenas(2) is (memory._libc() is not None)
