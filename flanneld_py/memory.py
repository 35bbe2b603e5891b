"""Give memory the daemon freed back to the operating system.

A start-up listing of thousands of leases, and every resync pass, allocate and free many small
objects. glibc keeps freed heap memory for reuse, so the resident size would stay at the peak
of the listing although the daemon's steady state needs far less. `release_free_memory` asks
glibc to return its free pages (`malloc_trim(3)`); elsewhere (musl, other platforms) it does
nothing.
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


def release_free_memory() -> bool:
    """Collect garbage and return free heap memory to the system; True when glibc did so.

    Costs a few milliseconds (a walk of the heap); meant for after large, rare allocations.
    """
    gc.collect()
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
