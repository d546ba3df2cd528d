"""Keep image buffers in the process while it is busy, and hand them back when it goes idle.

Every buffer glibc maps or hands back must be page-faulted in again by the next
image, and in a process whose threads run on many cores each unmapping also
interrupts every one of them to flush its TLB. With the thresholds fixed at 8 MB
(mmap) and 1 MB (trim), as before, a 12 MP cut-out took 55,000-61,000 page faults
and 150-200 ms of system time, and on 16 cores 16 worker threads cut out 62 % of
what 16 one-thread processes did, with twice their share of CPU in the kernel
(bench/scaling.py; 86 % with glibc keeping everything freed). Buffers under 32 MB,
glibc's largest mmap threshold, now come from the heap, and up to 16 MB free at a
heap's top stays there: 11,000-24,000 faults and 40-80 ms. Peak RSS of one photo
alone is unchanged (24 MP 559 -> 569 MB, 48 MP 728 -> 741 MB); with several at once
the heaps hold more (12 MP, 4 clients: 930-968 -> 1,003-1,022 MB).

What the heaps keep is given back once the workers have been idle a moment
(``give_back_free_memory``, from ``app.runner``), so a service at rest holds
what one idle process needs, not the high-water mark of its last burst.

An operator's own glibc tuning (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``
or ``GLIBC_TUNABLES``) is left as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_OPERATOR_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_buffers_while_busy(mmap_threshold_bytes: int = 32 << 20, trim_threshold_bytes: int = 16 << 20) -> bool:
    """Fix glibc's mmap and trim thresholds; ``False`` where they were left alone (not glibc, or tuned already)."""
    libc = _glibc()
    if libc is None or _tuned_by_operator():
        return False
    mmap_set = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes))
    return mmap_set and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold_bytes))


def give_back_free_memory() -> bool:
    """Hand every arena's free pages back to the OS (glibc's ``malloc_trim``); ``False`` where there is none."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def _tuned_by_operator() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(knob in os.environ for knob in _OPERATOR_KNOBS) or "glibc.malloc." in tunables


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both are glibc's, absent from musl
    except (OSError, AttributeError):
        return None
    return libc
