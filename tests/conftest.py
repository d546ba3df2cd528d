"""Fixtures: the real model, and the real app served by uvicorn on a loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from app.main import create_app
from app.model import ModelSet, SaliencyModel, load_model
from app.server import uvicorn_config
from app.settings import Settings
from tests.wire import free_port


@pytest.fixture(scope="session")
def model() -> SaliencyModel:
    """The fast catalogue model, for the many tests about everything but the model's quality."""
    return load_model(Settings(model="u2netp"))


@pytest.fixture(scope="session")
def models(model: SaliencyModel) -> ModelSet:
    """The default (u2net-int8) and u2netp beside it, as the service loads them with MODELS=u2netp."""
    return ModelSet({"u2net-int8": load_model(Settings()), "u2netp": model}, "u2net-int8")


class ThreadedServer:
    """An ASGI app under uvicorn, configured as ``python -m app`` configures it, in a background thread on a loopback
    port; ``options`` override uvicorn's options."""

    def __init__(self, app: ASGIApp, port: int, settings: Settings | None = None, **options: Any) -> None:
        self.address = ("127.0.0.1", port)
        settings = replace(settings or Settings(), host="127.0.0.1", port=port)
        config = uvicorn_config(app, settings, log_level="warning", **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LiveServer:
    """The app under uvicorn in a background thread, reachable over real HTTP."""

    def __init__(self, settings: Settings, model: SaliencyModel | ModelSet | None = None) -> None:
        self.settings = replace(settings, host="127.0.0.1", port=free_port())
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self._uvicorn = ThreadedServer(create_app(self.settings, model), self.settings.port, self.settings)

    def start(self) -> LiveServer:
        self._uvicorn.start()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(self.url + "/healthz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the model never became ready")
            time.sleep(0.02)

    def stop(self) -> None:
        self._uvicorn.stop()

    @contextmanager
    def busy_with(self, image: bytes, headers: dict[str, str] | None = None) -> Iterator[None]:
        """While ``image`` is being cut out (WORKERS=1, MAX_QUEUE=0: every place taken)."""
        response: list[httpx.Response] = []

        def occupy() -> None:
            response.append(httpx.post(self.url + "/remove", content=image, headers=headers, timeout=120))

        running = threading.Thread(target=occupy)
        running.start()
        try:
            deadline = time.monotonic() + 30
            while httpx.get(self.url + "/healthz").json()["in_flight"] < 1:
                assert time.monotonic() < deadline, "the occupying upload never started"
                time.sleep(0.01)
            yield
            assert httpx.get(self.url + "/healthz").json()["in_flight"] == 1, "the occupying image finished too soon"
        finally:
            running.join()
        assert response and response[0].status_code == 200


@contextmanager
def serving(settings: Settings, model: SaliencyModel | ModelSet | None = None) -> Iterator[LiveServer]:
    """A started, warmed-up ``LiveServer``, stopped on the way out."""
    live = LiveServer(settings, model).start()
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=2), model) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
