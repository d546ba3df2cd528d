"""A bounded pool for the heavy, blocking work, and fast refusal when it is full.

Admission is counted on the event loop (no locks needed). A request takes one
of ``workers + max_queue`` places only once its body is in, so a client that
sends its body slowly, or not at all, holds no place (``app.api.flow`` bounds
how long it may take and how many bytes all bodies on their way may hold). The
fast refusal stays: while every place is taken, a new image is turned away
with 503 before its body is read (``refusal``, asked by ``app.api.admission``).
The workers run at the lowest CPU priority (``app.priority``), so that the loop
doing this never waits for a core behind an image.

A job can be stopped between its stages: ``stage_boundary()``, called by the
pipeline, raises ``JobStopped`` once the job's client has gone or the service
is stopping, so no core goes on working for nobody.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import threading
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
    """Every worker is busy and the wait queue is full (or the bodies on their way hold all they may)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue full, retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class JobStopped(Exception):
    """Raised inside a job at a stage boundary: nobody waits for its result any more."""


class _Job:
    """What the loop and the worker thread share about one job: the order to stop, and whether it began."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.started = False


_current_job: contextvars.ContextVar[_Job | None] = contextvars.ContextVar("current_job", default=None)


def stage_boundary() -> None:
    """Stop here if the job running this was told to stop. A no-op outside the runner (the CLI, the tests)."""
    job = _current_job.get()
    if job is not None and job.stop.is_set():
        raise JobStopped()


class Runner:
    def __init__(
        self,
        workers: int,
        max_queue: int,
        on_idle: Callable[[], object] | None = None,
        idle_after_s: float = 2.0,
        body_budget_bytes: int | None = None,
        on_stopped: Callable[[str], object] | None = None,
    ) -> None:
        """``on_idle`` runs on a worker once no job has run for ``idle_after_s``: housekeeping
        (``app.allocator.give_back_free_memory``) that would slow the jobs if done between them.
        ``body_budget_bytes`` bounds the request bodies held in memory, received or on their way (None: no bound);
        ``on_stopped`` is told ``"queued"`` or ``"running"`` for every job stopped before it finished."""
        self.workers = workers
        self.max_queue = max_queue
        self.body_budget_bytes = body_budget_bytes
        self._on_idle, self._idle_after_s = on_idle, idle_after_s
        self._on_stopped = on_stopped
        self._idle_timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="worker", initializer=lower_this_thread
        )
        self._admitted = 0
        self._submitted = 0  # jobs handed to the pool, running or waiting there for a worker
        self._jobs: set[_Job] = set()
        self._body_bytes = 0
        self._mean_job_s = 1.0  # refined by every finished job
        self.accepting = True

    @property
    def in_flight(self) -> int:
        """Jobs on a worker now (the pool starts them in order, as soon as a worker is free)."""
        return min(self._submitted, self.workers)

    @property
    def waiting(self) -> int:
        """Jobs admitted and waiting for a worker."""
        return self._submitted - self.in_flight

    @property
    def body_bytes(self) -> int:
        return self._body_bytes

    def refusal(self) -> QueueFull | None:
        """What ``slot`` would raise now: lets a request be turned away before anything else is done for it."""
        if not self.accepting or self._admitted >= self.workers + self.max_queue:
            return QueueFull(self._retry_after_s())
        return None

    def body_refusal(self) -> QueueFull | None:
        """Whether a new body would be refused its first bytes now: the bodies in memory hold the whole budget."""
        if self.body_budget_bytes is not None and self._body_bytes >= self.body_budget_bytes:
            return QueueFull(self._retry_after_s())
        return None

    def hold_body_bytes(self, size: int, already_held: int) -> None:
        """Count ``size`` more bytes of a body that holds ``already_held``; ``QueueFull`` past the budget.

        A body that would hold the budget alone is let through whatever its size (its own limits apply),
        so one upload larger than the budget is never refused for want of memory that nothing else uses.
        """
        budget = self.body_budget_bytes
        if budget is not None and self._body_bytes + size > budget and self._body_bytes > already_held:
            raise QueueFull(self._retry_after_s())
        self._body_bytes += size

    def release_body_bytes(self, size: int) -> None:
        self._body_bytes -= size

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``workers + max_queue`` places while the request's job waits and runs."""
        if (refused := self.refusal()) is not None:
            raise refused
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` on a worker. Cancelling the caller stops the job: a waiting one never starts, a running one
        stops at its next stage boundary, which this waits for (one stage), so the place stays taken until the
        worker is free again."""
        if not self.accepting:
            raise JobStopped()
        job = _Job()

        def work() -> tuple[T, float]:
            if job.stop.is_set():
                raise JobStopped()
            job.started = True
            started = time.perf_counter()
            return fn(*args, **kwargs), time.perf_counter() - started

        # The caller's context (its request id) goes along, so the job's log lines carry it; and the job itself.
        context = contextvars.copy_context()
        context.run(_current_job.set, job)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        submitted = self._executor.submit(context.run, work)
        finished = asyncio.wrap_future(submitted)
        self._submitted += 1
        self._jobs.add(job)
        try:
            result, elapsed = await asyncio.shield(finished)
        except asyncio.CancelledError:
            if submitted.cancel():
                self._stopped("queued")
            else:
                job.stop.set()
                await asyncio.wait([finished])  # one stage at most; its JobStopped is counted below
                if isinstance(finished.exception(), JobStopped):
                    self._stopped("running" if job.started else "queued")
            raise
        except JobStopped:
            self._stopped("running" if job.started else "queued")
            raise
        finally:
            self._jobs.discard(job)
            self._submitted -= 1
            if self._submitted == 0 and self._on_idle is not None:  # every job start cancels a pending timer
                self._idle_timer = asyncio.get_running_loop().call_later(self._idle_after_s, self._idle)
        self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed
        return result

    def stop_all(self) -> None:
        """Refuse new work and tell every job to stop: a waiting one never starts, a running one stops at its
        next stage boundary. Their callers get ``JobStopped``."""
        self.accepting = False
        for job in list(self._jobs):
            job.stop.set()

    def _stopped(self, when: str) -> None:
        if self._on_stopped is not None:
            self._on_stopped(when)

    def _idle(self) -> None:
        self._idle_timer = None
        if self._submitted == 0 and self.accepting and self._on_idle is not None:
            self._executor.submit(self._on_idle)

    def _retry_after_s(self) -> int:
        """Roughly when the next place frees up: the next of the running jobs to finish.

        Not when the whole queue would have drained: clients told that come back to
        idle workers (measured: 12 MP at concurrency 16 lost a fifth of its rate).
        """
        return spread_retry_after(self._mean_job_s / self.workers)

    def shutdown(self) -> None:
        """Refuse new work, stop the jobs at their next stage boundary, and wait for that (one stage, not the job)."""
        self.stop_all()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=False)
