"""``GET /healthz``: the probe. Answered on the event loop, never behind the work queue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app import __version__
from app.api.deps import State

router = APIRouter()


@router.get(
    "/healthz",
    summary="Readiness and liveness probe",
    responses={
        200: {"description": "The model is loaded and warm; the body describes it."},
        503: {"description": "Starting (model warming up), stopping, or failed.", "content": {"application/json": {"example": {"status": "starting"}}}},
    },
)
async def healthz(state: State) -> JSONResponse:
    if state.status != "ok" or state.models is None:
        body: dict[str, Any] = {"status": state.status}
        if state.failure:
            body["error"] = state.failure
        return JSONResponse(body, status_code=503)
    runner = state.runner
    models = [_described(model.info.as_dict(), bool(state.settings.api_keys)) for model in state.models]
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "model": next(m for m in models if m["name"] == state.models.default),
            "models": models,
            "default_model": state.models.default,
            "quality": state.settings.quality,
            "workers": runner.workers,
            "intra_op_threads": state.settings.intra_op_threads,
            "solo_threads": state.models.default_model.solo_threads,
            "in_flight": runner.in_flight,
            "waiting": runner.waiting,
            "max_queue": runner.max_queue,
            "startup_ms": state.timings,
        }
    )


def _described(info: dict[str, Any], keyed: bool) -> dict[str, Any]:
    """A model's facts for the open probe: with API keys set, no file-system path (the probe
    answers without a key, and the path says how the host is laid out)."""
    return {name: value for name, value in info.items() if not (keyed and name == "path")}
