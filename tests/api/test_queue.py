"""Overload is answered at once with 503 + Retry-After, and the server keeps serving."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from app.model import SaliencyModel
from app.runner import Runner
from app.settings import Settings
from tests.conftest import LiveServer, serving
from tests.images import large_photo_bytes, photo_bytes


@pytest.fixture
def tiny_server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=1, max_queue=1), model) as live:
        yield live


def test_full_queue_gives_fast_503_with_retry_after(tiny_server: LiveServer) -> None:
    big = large_photo_bytes(12)
    results: list[tuple[int, float, httpx.Response]] = []

    def upload() -> None:
        with httpx.Client(timeout=120) as http:
            started = time.perf_counter()
            response = http.post(tiny_server.url + "/remove", content=big)
            results.append((response.status_code, time.perf_counter() - started, response))

    uploads = [threading.Thread(target=upload) for _ in range(6)]
    for upload_thread in uploads:
        upload_thread.start()
        time.sleep(0.05)
    for upload_thread in uploads:
        upload_thread.join()

    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) >= 2, statuses  # one running, one queued
    refused = [(elapsed, response) for status, elapsed, response in results if status == 503]
    assert refused, statuses
    for elapsed, response in refused:
        assert response.json()["error"]["code"] == "busy"
        assert int(response.headers["retry-after"]) >= 1
        assert elapsed < 1.0
    after = httpx.post(tiny_server.url + "/remove", content=photo_bytes(), timeout=60)
    assert after.status_code == 200


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_workers_yield_the_cpu_to_the_event_loop() -> None:
    """With every core cutting out images, /healthz and refusals must still get the CPU at once."""
    runner = Runner(workers=1, max_queue=0)
    try:
        worker, loop = asyncio.run(runner.run(os.sched_getscheduler, 0)), os.sched_getscheduler(0)
    finally:
        runner.shutdown()
    assert (worker, loop) == (os.SCHED_IDLE, os.SCHED_OTHER)


def test_idle_housekeeping_runs_once_the_workers_rest() -> None:
    """Memory is given back between bursts, never between the jobs of one, and never on the event loop."""
    threads: list[str] = []

    async def scenario() -> list[int]:
        runner = Runner(workers=1, max_queue=1, on_idle=lambda: threads.append(threading.current_thread().name),
                        idle_after_s=0.2)
        seen = []
        try:
            await runner.run(time.sleep, 0.01)
            await asyncio.sleep(0.1)
            await runner.run(time.sleep, 0.01)  # in time: the pending housekeeping is put off
            await asyncio.sleep(0.1)
            seen.append(len(threads))
            await asyncio.sleep(0.3)
            seen.append(len(threads))
            await asyncio.sleep(0.4)  # idle on: once per rest, not again and again
            seen.append(len(threads))
        finally:
            runner.shutdown()
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1]
    assert threads[0].startswith("worker")


def test_retry_after_is_spread_around_the_expected_wait() -> None:
    """Refused together, told the same wait, clients would come back together."""
    from app.runner import spread_retry_after

    waits = [spread_retry_after(4.0) for _ in range(1000)]
    assert min(waits) == 2 and max(waits) == 6
    assert 3.7 < sum(waits) / len(waits) < 4.3
    assert {spread_retry_after(0.3) for _ in range(100)} == {1}  # never 0: that would mean at once


def test_cancelled_jobs_stop_at_a_stage_boundary_and_waiting_ones_never_start() -> None:
    """Cancelling a caller drops its job if it waits; ``stop_all`` stops a running one at its next boundary."""
    from app.runner import JobStopped, stage_boundary

    stopped: list[str] = []
    ran: list[str] = []
    release = threading.Event()

    def stages(name: str) -> str:
        ran.append(name)
        while not release.wait(0.01):
            stage_boundary()
        return name

    async def scenario() -> None:
        runner = Runner(workers=1, max_queue=1, on_stopped=stopped.append)
        try:
            running = asyncio.ensure_future(runner.run(stages, "running"))
            while runner.in_flight < 1 or not ran:
                await asyncio.sleep(0.01)
            waiting = asyncio.ensure_future(runner.run(stages, "waiting"))
            await asyncio.sleep(0.05)
            assert (runner.in_flight, runner.waiting) == (1, 1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert stopped == ["queued"] and runner.waiting == 0
            runner.stop_all()
            with pytest.raises(JobStopped):
                await running
            assert stopped == ["queued", "running"] and runner.in_flight == 0
            with pytest.raises(JobStopped):  # and nothing new starts
                await runner.run(stages, "late")
        finally:
            release.set()
            runner.shutdown()

    asyncio.run(scenario())
    assert ran == ["running"]
    stage_boundary()  # outside the pool: nothing to stop
