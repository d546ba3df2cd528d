"""``python -m app``: check the settings and the model, then serve with uvicorn.

The model is loaded here, before uvicorn starts, so a missing or corrupt file
stops the process with one readable line instead of a lifespan traceback.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.logs import configure_logging
from app.main import create_app
from app.model import ModelError, load_models
from app.server import raise_open_file_limit, uvicorn_config
from app.settings import Settings, SettingsError

logger = logging.getLogger("app")


STAGE_ALLOWANCE_S = 5.0  # after the graceful timeout: for the jobs told to stop to reach a stage boundary


class GracefulServer(uvicorn.Server):
    """uvicorn, whose stop first tells the probes and refuses new work.

    On SIGTERM (or Ctrl+C) ``/healthz`` turns 503 and ``/remove`` answers 503
    ``shutting_down`` at once; after ``drain_seconds`` uvicorn stops listening
    and waits (up to its graceful timeout) for the requests in flight to finish.
    The drain lets a load balancer that polls ``/healthz`` move traffic away
    before connections are refused.

    The graceful timeout is a real bound: when it runs out, every job is told
    to stop (a waiting one never starts, a running one stops at its next stage
    boundary) and its request answers 503 ``shutting_down``. uvicorn's own
    timeout, which cancels what is left (a 500 with tracebacks, before), is
    moved ``STAGE_ALLOWANCE_S`` later, as a backstop.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_seconds: int) -> None:
        super().__init__(config)
        self.app = app
        self.drain_seconds = drain_seconds
        self._drain_until: float | None = None
        self.graceful_timeout_s = config.timeout_graceful_shutdown
        if self.graceful_timeout_s is not None:
            config.timeout_graceful_shutdown = self.graceful_timeout_s + STAGE_ALLOWANCE_S

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        service = getattr(self.app.state, "service", None)
        if service is not None:
            service.status = "stopping"
        if self._drain_until is None and self.drain_seconds > 0:
            self._drain_until = time.monotonic() + self.drain_seconds
            logger.info("stopping: refusing new work, draining for %d s", self.drain_seconds)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stopping = None
        if self.graceful_timeout_s is not None:
            stopping = asyncio.get_running_loop().call_later(self.graceful_timeout_s, self._stop_jobs)
        try:
            await super().shutdown(sockets)
        finally:
            if stopping is not None:
                stopping.cancel()

    def _stop_jobs(self) -> None:
        service = getattr(self.app.state, "service", None)
        if service is None:
            return
        runner = service.runner
        logger.warning(
            "graceful timeout of %g s reached: stopping %d job(s) at their next stage boundary",
            self.graceful_timeout_s, runner.in_flight + runner.waiting,
        )
        runner.stop_all()


def main() -> None:
    try:
        settings = Settings.from_env()
        models = load_models(settings)
    except (SettingsError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)
    raise_open_file_limit()  # before the config, which fits the connection cap to the limit
    app = create_app(settings, models)
    config = uvicorn_config(app, settings)
    freeze_startup_objects()
    GracefulServer(config, app, settings.drain_seconds).run()


def freeze_startup_objects() -> None:
    """Leave what start-up made (modules, the app, the model's wrappers) out of every later
    collection: they live as long as the process, and a full collection that walks them all
    took 45 ms of the event loop every 1.7 s when a flood of refused uploads churned connections.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()
