"""``create_app()``: the FastAPI app, its lifespan and its error handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, errors
from app.api import health, metrics, remove, removebg, web
from app.api.access import AccessMiddleware
from app.api.admission import AdmissionMiddleware, ImageRoute
from app.api.expect import ExpectContinueMiddleware
from app.api.flow import BodyDeadlineMiddleware
from app.api.auth import Guard, rate_limit_headers
from app.allocator import give_back_free_memory, keep_buffers_while_busy
from app.metrics import Metrics
from app.api.deps import ServiceState
from app.model import ModelSet, SaliencyModel, load_models
from app.runner import QueueFull, Runner
from app.settings import Settings

logger = logging.getLogger("app")

DESCRIPTION = """Remove the background of a photo on your own server.

`POST /remove` takes an image (multipart field `file`, or the raw bytes) and returns a
transparent cut-out, the subject on a colour, or the alpha mask. Errors are JSON:
`{"error": {"code": "...", "message": "..."}}`.

`POST /v1.0/removebg` and `GET /v1.0/account` answer remove.bg's v1.0 API (its parameters,
headers and error shape), so remove.bg clients switch by changing the base URL.
With `API_KEYS` set, the API needs a key: `X-Api-Key`, or `Authorization: Bearer`.
"""


def create_app(settings: Settings | None = None, models: ModelSet | SaliencyModel | None = None) -> FastAPI:
    """Build the app; pass ``models`` to reuse ones already loaded (the entry point does; tests pass one)."""
    settings = settings or Settings.from_env()
    observed = Metrics()
    if isinstance(models, SaliencyModel):
        models = ModelSet.of(models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keep_buffers_while_busy()
        runner = Runner(
            settings.workers,
            settings.queue_limit,
            on_idle=give_back_free_memory,
            # bodies in memory, on their way or received: what the places could hold with an upload each
            body_budget_bytes=(settings.workers + settings.queue_limit) * settings.max_upload_bytes,
            on_stopped=lambda when: observed.jobs_stopped.labels(when).inc(),
        )
        state = ServiceState(settings=settings, runner=runner, models=models)
        app.state.service = state
        observed.watch(state.runner)
        if state.models is None:
            started = time.perf_counter()
            state.models = await asyncio.to_thread(load_models, settings)
            state.timings["load"] = round((time.perf_counter() - started) * 1000.0, 1)
        warm_up = asyncio.create_task(_warm_up(state, observed))
        try:
            yield
        finally:
            state.status = "stopping"
            if not warm_up.done():
                warm_up.cancel()
            state.runner.stop_all()  # what is left runs at most to its next stage boundary
            await asyncio.to_thread(state.runner.shutdown)

    app = FastAPI(
        title="Background removal",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Swagger UI and ReDoc load their script from a CDN: not on the origin whose Basic key the browser holds.
        docs_url=None if settings.api_keys else "/docs",
        redoc_url=None if settings.api_keys else "/redoc",
    )
    app.state.metrics = observed
    app.state.guard = Guard.from_settings(settings)
    app.include_router(remove.router)
    app.include_router(removebg.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(web.router)
    _add_error_handlers(app)
    routes = {route.path: route for route in [*remove.router.routes, *removebg.router.routes] if isinstance(route, APIRoute)}
    image_routes = {
        "/remove": ImageRoute(routes["/remove"], error_response),
        "/v1.0/removebg": ImageRoute(routes["/v1.0/removebg"], removebg.removebg_error),
    }
    app.add_middleware(AdmissionMiddleware, routes=image_routes, metrics=observed)
    app.add_middleware(
        BodyDeadlineMiddleware,
        idle_seconds=settings.upload_idle_seconds,
        min_bytes_per_second=settings.upload_min_bytes_per_second,
    )
    app.add_middleware(ExpectContinueMiddleware)
    app.add_middleware(AccessMiddleware, metrics=observed)
    return app


async def _warm_up(state: ServiceState, observed: Metrics) -> None:
    """Run each model's warm-up in the pool before /healthz says ok; requests queue behind it.

    The models warm up side by side, one worker each, so a second model adds little to the
    cold start; the default's own warm-up is the floor.
    """
    assert state.models is not None
    started = time.perf_counter()
    models = list(state.models)
    results = await asyncio.gather(*(state.runner.run(model.warm_up) for model in models), return_exceptions=True)
    for model, result in zip(models, results, strict=True):
        if isinstance(result, BaseException):
            state.status, state.failure = "failed", f"warm-up inference of {model.info.name} failed: {result}"
            logger.error("model %s failed its warm-up inference: %s", model.info.path, result)
            return
    state.timings["warm_up"] = round((time.perf_counter() - started) * 1000.0, 1)
    for phase, ms in state.timings.items():
        observed.startup_seconds.labels(phase).set(ms / 1000.0)
    if state.status == "starting":
        state.status = "ok"
        for model in models:
            info = model.info
            logger.info("model %s ready (%s, %dx%d, %s)", info.name, info.precision, info.input_width, info.input_height, info.provider)


def error_response(error: errors.ApiError) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=error.status, headers=error.headers)


def _add_error_handlers(app: FastAPI) -> None:
    def rejected(request: Request, error: errors.ApiError) -> JSONResponse:
        request.app.state.metrics.rejected.labels(error.code).inc()
        response = error_response(error)
        for name, value in rate_limit_headers(request).items():  # a refused image still spent its token
            response.headers.setdefault(name, value)
        return response

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.ApiError)
        return rejected(request, exc)

    async def on_queue_full(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QueueFull)
        return rejected(request, errors.busy(exc.retry_after_s))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or error['loc'][0]}: {error['msg']}" for error in exc.errors()
        )
        return rejected(request, errors.invalid_option(problems or "invalid request"))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(errors.ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(errors.ApiError(500, "internal_error", "Something went wrong on our side; the request was not processed."))

    app.add_exception_handler(errors.ApiError, on_api_error)
    app.add_exception_handler(QueueFull, on_queue_full)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
