"""The lowest CPU priority for a thread, and for the threads it starts."""

from __future__ import annotations

import os
import threading

import pytest

from app.priority import at_low_priority, lower_this_thread

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")


def _policy_of_a_new_thread() -> int:
    policies: list[int] = []
    thread = threading.Thread(target=lambda: policies.append(os.sched_getscheduler(0)))
    thread.start()
    thread.join()
    return policies[0]


def test_lowered_thread_is_sched_idle_and_so_are_the_threads_it_starts() -> None:
    def lowered() -> tuple[int, int]:
        lower_this_thread()
        return os.sched_getscheduler(0), _policy_of_a_new_thread()

    assert at_low_priority(lowered) == (os.SCHED_IDLE, os.SCHED_IDLE)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller keeps its own


def test_at_low_priority_hands_back_the_result_or_the_error() -> None:
    assert at_low_priority(lambda a, b=0: (a, b, os.sched_getscheduler(0)), 1, b=2) == (1, 2, os.SCHED_IDLE)
    with pytest.raises(KeyError, match="missing"):
        at_low_priority({}.__getitem__, "missing")
