"""What every route needs from the running app, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from app import errors
from app.runner import Runner
from app.settings import Settings

if TYPE_CHECKING:
    from app.model import ModelSet, SaliencyModel


@dataclass
class ServiceState:
    """The app's one piece of state: settings, the models once loaded, the pool."""

    settings: Settings
    runner: Runner
    models: ModelSet | None = None
    status: str = "starting"  # starting -> ok -> stopping, or failed
    failure: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> SaliencyModel | None:
        """The default model, once loaded."""
        return None if self.models is None else self.models.default_model

    def check_ready_for_images(self) -> None:
        """The 503 a new image gets while the service is stopping, or has no working model."""
        if self.status == "stopping":
            raise errors.shutting_down()
        if self.models is None or self.status == "failed":
            raise errors.model_unavailable()

    def model_for(self, name: str | None, quality: str) -> SaliencyModel:
        """The model a request asked for (see ``ModelSet.for_request``); 422 for one that is not loaded."""
        self.check_ready_for_images()
        assert self.models is not None
        model = self.models.for_request(name, quality)
        if model is None:
            loaded = ", ".join(self.models.models)
            raise errors.invalid_option(f"model: {name!r} is not loaded here (loaded: {loaded}; MODELS sets which)")
        return model


async def get_state(request: Request) -> ServiceState:
    """``async`` so FastAPI calls it on the loop: a plain ``def`` would cost every request,
    /healthz included, a hop through the thread pool and back, waiting on the GIL each way."""
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]
