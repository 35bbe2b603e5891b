"""Give memory the daemon freed back to the operating system.

A start-up listing of thousands of leases, and every resync pass, allocate and free many small
objects. glibc keeps freed heap memory for reuse, so the resident size would stay at the peak
of the listing although the daemon's steady state needs far less. `release_free_memory` asks
glibc to return its free pages (`malloc_trim(3)`), and `configure_allocator` makes the threads'
arenas return their free tops too; elsewhere (musl, other platforms) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Any


@functools.cache
def _libc() -> Any:
    """glibc, or None where there is no `malloc_trim` (musl, other platforms)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


M_TRIM_THRESHOLD = -1  # mallopt(3) parameter number
TRIM_THRESHOLD = 128 * 1024  # bytes: glibc's default value, set explicitly


def configure_allocator() -> bool:
    """Make glibc return the free top of every malloc arena once it exceeds 128 KiB; True when
    glibc took the setting. Call once at start-up.

    glibc's `malloc_trim` shrinks only the main arena's top; a thread's arena gives its top back
    only when a `free()` finds it above the trim threshold, and by default that threshold grows
    (up to 64 MiB) each time a large block (such as a resized table of thousands of peers) is
    freed. The reconciler's thread then kept about 1.5 MiB of freed pass memory resident at
    5,000 peers. Setting the threshold turns that growth off (mallopt(3), "M_TRIM_THRESHOLD").
    """
    libc = _libc()
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) if libc is not None else False


def release_free_memory() -> bool:
    """Collect garbage and return free heap memory to the system; True when glibc did so.

    Costs a few milliseconds (a walk of the heap); meant for after large, rare allocations.
    """
    gc.collect()
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
