"""What every route needs from the running app, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from app import errors
from app.runner import Runner
from app.settings import Settings

if TYPE_CHECKING:
    from app.model import SaliencyModel


@dataclass
class ServiceState:
    """The app's one piece of state: settings, the model once loaded, the pool."""

    settings: Settings
    runner: Runner
    model: SaliencyModel | None = None
    status: str = "starting"  # starting -> ok -> stopping, or failed
    failure: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def check_ready_for_images(self) -> None:
        """The 503 a new image gets while the service is stopping, or has no working model."""
        if self.status == "stopping":
            raise errors.shutting_down()
        if self.model is None or self.status == "failed":
            raise errors.model_unavailable()


async def get_state(request: Request) -> ServiceState:
    """``async`` so FastAPI calls it on the loop: a plain ``def`` would cost every request,
    /healthz included, a hop through the thread pool and back, waiting on the GIL each way."""
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]
