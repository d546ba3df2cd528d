"""How an image request flows: its body within deadlines and a memory budget, then its job, while its client waits.

A request takes its place in the pool (``Runner.slot``) only once its body is in, so a client that sends
nothing after its headers (or after ``100 Continue``), or a byte now and then, holds no worker. What such a
body may cost is bounded here instead:

- time: a body silent for ``UPLOAD_IDLE_SECONDS``, or slower on average than ``UPLOAD_MIN_BYTES_PER_SECOND``
  once that grace is over, is answered 408 and its connection closed;
- memory: the bytes of all bodies in memory, on their way or received, are counted against the runner's
  budget; a body that would pass it is refused 503 ``busy``, as a full queue is.

Then ``run_for_client`` runs the job for as long as someone waits for it: a client that goes away has its
job dropped (still waiting) or stopped at its next stage boundary (running).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.runner import JobStopped, Runner

if TYPE_CHECKING:
    from app.api.deps import ServiceState

P = ParamSpec("P")
T = TypeVar("T")


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, idle_seconds: float, min_bytes_per_second: float) -> None:
        self.app = app
        self.idle_seconds = idle_seconds
        self.min_bytes_per_second = min_bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        service: ServiceState | None = getattr(scope["app"].state, "service", None)
        body = _IncomingBody(receive, service.runner if service is not None else None, self)
        try:
            await self.app(scope, body.receive, body.closing(send))
        finally:
            body.release()


class _IncomingBody:
    """One request's body: when its next bytes must have come, and what it holds of the memory budget."""

    def __init__(self, receive: Receive, runner: Runner | None, limits: BodyDeadlineMiddleware) -> None:
        self._receive = receive
        self.runner = runner
        self.idle_s = limits.idle_seconds
        self.min_rate = limits.min_bytes_per_second
        self.started: float | None = None  # when the app first asked for it (uvicorn sends 100 Continue then)
        self.last_bytes_at = 0.0
        self.received = 0
        self.held = 0  # of the runner's budget, given back when the request ends
        self.complete = False
        self.cut = False  # timed out: the connection closes, as the client may never send the rest

    async def receive(self) -> Message:
        if self.complete:  # after the body only http.disconnect comes, whenever the client goes
            return await self._receive()
        if self.cut:
            return {"type": "http.disconnect"}
        loop = asyncio.get_running_loop()
        if self.started is None:
            self.started = self.last_bytes_at = loop.time()
        idle_at = self.last_bytes_at + self.idle_s
        too_slow_at = self.started + max(self.idle_s, self.received / self.min_rate)  # the average, past the grace
        try:
            async with asyncio.timeout_at(min(idle_at, too_slow_at)):
                message = await self._receive()
        except TimeoutError:
            self.cut = True
            if idle_at <= too_slow_at:
                raise errors.upload_timeout(self.idle_s) from None
            raise errors.upload_too_slow(self.min_rate) from None
        except asyncio.CancelledError:
            if not _stopping(self.runner):
                raise
            raise errors.shutting_down() from None
        if message["type"] == "http.request":
            self._count(message.get("body", b""), loop.time())
            self.complete = not message.get("more_body", False)
        return message

    def _count(self, chunk: bytes, now: float) -> None:
        if not chunk:
            return
        self.received += len(chunk)
        self.last_bytes_at = now
        if self.runner is not None:  # QueueFull past the budget; the rest of the body is dropped unread (app.protocol)
            self.runner.hold_body_bytes(len(chunk), self.held)
            self.held += len(chunk)

    def closing(self, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.cut:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        return send_closing

    def release(self) -> None:
        if self.runner is not None:
            self.runner.release_body_bytes(self.held)
        self.held = 0


async def run_for_client(request: Request, runner: Runner, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``runner.run(fn, ...)``, for as long as the client waits for its result.

    A client that disconnects meanwhile has its job stopped, and its request ends as 499
    ``client_closed_request`` (logged; nobody reads it). A job stopped because the service is stopping, or a
    request cancelled by uvicorn's graceful timeout, answers 503 ``shutting_down`` instead of a 500.
    """
    job = asyncio.ensure_future(runner.run(fn, *args, **kwargs))
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait([job, gone], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        job.cancel()  # its worker stops at the next stage boundary; nobody waits for that here
        gone.cancel()
        if not _stopping(runner):
            raise
        raise errors.shutting_down() from None
    if not job.done():
        job.cancel()
        await asyncio.wait([job])  # until the worker is free: the place stays taken as long as it is busy
        raise errors.client_closed_request()
    gone.cancel()
    try:
        return job.result()
    except JobStopped:
        raise errors.shutting_down() from None


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone; uvicorn says so only after the body was read whole."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _stopping(runner: Runner | None) -> bool:
    """Whether a cancelled request should answer 503 instead: the service is stopping (uvicorn's graceful timeout
    cancels what is left), so it answers rather than ending in a 500 with tracebacks. The cancel is then taken back."""
    task = asyncio.current_task()
    if runner is None or runner.accepting or task is None:
        return False
    task.uncancel()
    return True


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
