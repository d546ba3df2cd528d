"""Loading the model the settings name."""

from __future__ import annotations

import os

import pytest

from app.model import load_model
from app.settings import Settings


def _threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or not os.path.isdir("/proc/self/task"), reason="Linux's")
def test_onnxruntime_threads_start_at_the_workers_priority() -> None:
    """A solo session's intra-op threads run images too: at the loop's priority they would compete with it."""
    before = _threads()
    model = load_model(Settings(intra_op_threads=1, solo_threads=2))
    started = _threads() - before
    assert model.solo_threads == 2
    assert started, "onnxruntime started no intra-op thread"
    assert {os.sched_getscheduler(tid) for tid in started} == {os.SCHED_IDLE}
