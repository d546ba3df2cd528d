"""Every dependency runs on the event loop: a plain ``def`` would send each request through
the thread pool and back, waiting for the GIL each way while the workers hold it."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.api import health, metrics, remove, removebg, web


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


ROUTES = [
    route
    for router in (remove.router, removebg.router, health.router, metrics.router, web.router)
    for route in router.routes
    if isinstance(route, APIRoute)
]


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{sorted(route.methods)[0]} {route.path}")
def test_routes_and_their_dependencies_are_async(route: APIRoute) -> None:
    assert inspect.iscoroutinefunction(route.endpoint), route.endpoint
    for dependency in _dependencies(route.dependant):
        assert inspect.iscoroutinefunction(dependency.call), dependency.call
