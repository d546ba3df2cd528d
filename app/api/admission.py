"""Turn an image away while the pool is full, before FastAPI spends anything on it.

Under a flood most requests are refusals, and a refusal that goes through
routing, dependency solving and the exception handlers costs the event loop
about a millisecond: with 64 clients sending again at once that is most of
the loop, and /healthz waits behind it. Here the refusal is one lookup and one
small response. The routes' own ``runner.slot()`` stays the authority (a
request let through here is still refused there if the pool filled meanwhile);
this only answers early what it would answer late. The same goes for the
memory budget of bodies on their way (``app.api.flow``): while it is spent, a
new upload is refused before ``100 Continue`` asks for its body.

Only callers who would get that far are refused here: without ``API_KEYS``,
anyone; with them, a request with a valid key. Everyone else goes on to the
route, which gives them its 401 or 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.metrics import Metrics

if TYPE_CHECKING:
    from app.api.deps import ServiceState


@dataclass(frozen=True)
class ImageRoute:
    route: BaseRoute  # set as the scope's route, so the access log and the metrics name it
    render: Callable[[errors.ApiError], Response]  # the error in this route's own shape


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, routes: dict[str, ImageRoute], metrics: Metrics) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if target is not None:
            service: ServiceState | None = getattr(scope["app"].state, "service", None)
            refused = None
            if service is not None and service.status == "ok":
                refused = service.runner.refusal() or service.runner.body_refusal()
            if refused is not None and _would_be_admitted(scope):
                scope["route"] = target.route
                self.metrics.rejected.labels("busy").inc()
                await target.render(errors.busy(refused.retry_after_s))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _would_be_admitted(scope: Scope) -> bool:
    try:
        scope["app"].state.guard.identify(Request(scope))
    except errors.ApiError:
        return False
    return True
