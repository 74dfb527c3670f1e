"""glibc's malloc, tuned for a capturing process (outspool's own processes only).

Two defaults of glibc cost a capturing process dearly:

- *An arena per thread.* Each capture thread gets a heap of its own that keeps
  freed read buffers, so a process capturing 64 programs grew by tens of MB it
  no longer used: at most ``ARENAS`` arenas.
- *Freed memory handed back at once.* A bulk capture allocates a buffer for
  every pipe read (up to ``read_size``, 1 MiB) and for every chunk it encodes,
  and frees each a few milliseconds later on another thread. A freed buffer at
  the top of a heap goes back to the kernel (``madvise``), and the next one
  faults its pages in again, zeroed: 66,000-192,000 page faults per GiB
  captured, most of the writer thread's CPU (docs/performance.md, *Bulk,
  idle machine*). Up to ``TRIM_THRESHOLD`` bytes of free heap are kept
  instead, and buffers up to ``MMAP_THRESHOLD`` come from the heap rather than
  from an ``mmap`` of their own; the peak memory of a 1 GiB capture stays the
  same (what is kept is what the next reads reuse).

:func:`tune` changes the whole process's allocator, so only outspool's CLI calls
it, never the library on a host program's behalf. Where the C library is not
glibc it does nothing (musl has a ``mallopt`` that ignores these parameters).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

#: Malloc arenas at most (glibc's default: 8 per core).
ARENAS = 2
#: Free heap an arena keeps instead of giving it back (glibc's default: 128 KiB, raised
#: as it sees large blocks freed).
TRIM_THRESHOLD = 16 << 20
#: Blocks from this size on get an ``mmap`` of their own, unmapped again when freed.
MMAP_THRESHOLD = 4 << 20

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune() -> bool:
    """Set the three parameters above for this process; False if not glibc (nothing set)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    settings = (
        (_M_ARENA_MAX, ARENAS),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    )
    return all([mallopt(param, value) == 1 for param, value in settings])


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    found = libc.mallopt
    found.argtypes = (ctypes.c_int, ctypes.c_int)
    found.restype = ctypes.c_int
    call: Callable[[int, int], int] = found
    return call
