"""The event loop first: the threads that cut out images run only when it has nothing to do.

The loop answers /healthz and turns a flood away with 503; if it waits for a core behind an
image, every client waits with it. Linux's SCHED_IDLE policy gives a thread the lowest weight
and, unlike niceness, lets a normal thread that wakes on its core take the core at once rather
than after the idle thread's time slice. Measured in floods of 64 clients with the server on
one core: the loop waited for a core 215 ms of every second with niceness 10, 16 ms with
SCHED_IDLE, and the 503s' p99 at the client's socket fell from 21-26 ms to 9-11 ms.

A thread inherits its creator's policy, so the threads a worker starts (PNG encoders) and
those onnxruntime starts while a session is created take it too.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

FALLBACK_NICENESS = 10  # where SCHED_IDLE is refused (some sandboxes): lower, if not last


def lower_this_thread() -> None:
    """Lowest CPU priority for the calling thread (Linux only: elsewhere nothing changes)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # pid 0: this thread, not the process
        return
    except (AttributeError, OSError):
        pass
    if sys.platform != "linux":
        return  # only Linux gives each thread its own niceness; elsewhere the id may name a process
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + FALLBACK_NICENESS))
    except OSError:
        pass


def at_low_priority(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` run in a new thread of the lowest priority, so the threads it starts keep that priority."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="low-priority", initializer=lower_this_thread) as once:
        return once.submit(fn, *args, **kwargs).result()
