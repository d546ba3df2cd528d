"""Hostile input over real HTTP: mutated images into /remove, and schemathesis over the OpenAPI schema.

Bounded: fixed example counts and per-example deadlines; the server must answer
every case with a success or a 4xx (or 503 when busy), never a 5xx, and keep serving.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import LiveServer
from tests.imaging.test_decode_fuzz import mutated_images


@settings(max_examples=60, deadline=timedelta(seconds=20), suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=mutated_images())
def test_damaged_uploads_never_break_the_server(server: LiveServer, data: bytes) -> None:
    response = httpx.post(server.url + "/remove", content=data, timeout=30)
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]["code"]


def test_every_operation_answers_within_its_schema(server: LiveServer) -> None:
    """Each operation of /openapi.json gets generated (and deliberately invalid) requests; every
    response must be documented for that operation and match its schema, and none may be a 5xx.
    Not checked: that schema-valid bodies are accepted; random bytes are valid "binary" but no photo.
    """
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/remove", "/healthz", "/metrics"}
    for operation in operations:

        @settings(max_examples=40, deadline=timedelta(seconds=20), suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=operation.as_strategy())
        def answers_within_schema(case: schemathesis.Case) -> None:
            case.call_and_validate(timeout=30, excluded_checks=[positive_data_acceptance])

        answers_within_schema()


def test_the_server_still_serves_after_the_fuzzing(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
