"""A bounded pool for the heavy, blocking work, and fast refusal when it is full.

Admission is counted on the event loop (no locks needed): a request takes a
slot *before* its body is read, so a flood of large uploads is turned away
with 503 at once instead of being buffered into memory first. The workers run
at the lowest CPU priority (``app.priority``), so that the loop doing this
never waits for a core behind an image.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

from app.priority import lower_this_thread

P = ParamSpec("P")
T = TypeVar("T")


def spread_retry_after(expected_s: float) -> int:
    """Whole seconds drawn at random from half to one and a half times ``expected_s``.

    Clients refused in one burst and told the same wait come back in one burst,
    and the last of them waits behind all the others' uploads. In a flood of 64
    clients that obey Retry-After, a fixed value let 37-41 % of the 503s come
    within 50 ms; spread, 77-95 %.
    """
    return random.randint(max(1, math.floor(0.5 * expected_s)), max(1, math.ceil(1.5 * expected_s)))


class QueueFull(Exception):
    """Every worker is busy and the wait queue is full."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue full, retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class Runner:
    def __init__(
        self, workers: int, max_queue: int, on_idle: Callable[[], object] | None = None, idle_after_s: float = 2.0
    ) -> None:
        """``on_idle`` runs on a worker once no job has run for ``idle_after_s``: housekeeping
        (``app.allocator.give_back_free_memory``) that would slow the jobs if done between them."""
        self.workers = workers
        self.max_queue = max_queue
        self._on_idle, self._idle_after_s = on_idle, idle_after_s
        self._idle_timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="worker", initializer=lower_this_thread
        )
        self._admitted = 0
        self._running = 0
        self._mean_job_s = 1.0  # refined by every finished job
        self.accepting = True

    @property
    def in_flight(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._admitted - self._running

    def refusal(self) -> QueueFull | None:
        """What ``slot`` would raise now: lets a request be turned away before anything else is done for it."""
        if not self.accepting or self._admitted >= self.workers + self.max_queue:
            return QueueFull(self._retry_after_s())
        return None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``workers + max_queue`` places for the whole request."""
        if (refused := self.refusal()) is not None:
            raise refused
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()

        def job() -> tuple[T, float]:
            started = time.perf_counter()
            return fn(*args, **kwargs), time.perf_counter() - started

        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._running += 1
        try:
            # The caller's context (its request id) goes along, so the job's log lines carry it.
            result, elapsed = await loop.run_in_executor(self._executor, contextvars.copy_context().run, job)
        finally:
            self._running -= 1
            if self._running == 0 and self._on_idle is not None:  # every job start cancels a pending timer
                self._idle_timer = loop.call_later(self._idle_after_s, self._idle)
        self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed
        return result

    def _idle(self) -> None:
        self._idle_timer = None
        if self._running == 0 and self.accepting and self._on_idle is not None:
            self._executor.submit(self._on_idle)

    def _retry_after_s(self) -> int:
        """Roughly when the next place frees up: the next of the running jobs to finish.

        Not when the whole queue would have drained: clients told that come back to
        idle workers (measured: 12 MP at concurrency 16 lost a fifth of its rate).
        """
        return spread_retry_after(self._mean_job_s / self.workers)

    def shutdown(self) -> None:
        """Refuse new work and wait for the jobs already running."""
        self.accepting = False
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=False)
