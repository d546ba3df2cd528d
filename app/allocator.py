"""Hand large image buffers back to the OS as soon as they are freed.

glibc serves a request above its mmap threshold with its own mapping, but
raises that threshold (up to 32 MB) each time such a block is freed; after
one large photo, the multi-megabyte bands of the next one come from the heap
and stay resident. A fixed 1 MB threshold keeps peak RSS down (measured:
692 -> 604 MB for a 24 MP photo) at no measurable cost in speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def return_large_buffers_to_os(threshold_bytes: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold; ``False`` where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
