"""A full pool turns images away before routing: in each API's own shape, and never ahead of the key check."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.model import SaliencyModel
from app.settings import Settings
from tests.conftest import LiveServer, serving
from tests.images import large_photo_bytes, photo_bytes

KEY = "the-key-of-admission"


@pytest.fixture(scope="module")
def one_slot_server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=1, max_queue=0, api_keys=(KEY,), rate_limit_per_minute=1000), model) as live:
        yield live


@pytest.fixture(scope="module")
def occupying_image() -> bytes:
    return large_photo_bytes(24)


def _metric(server: LiveServer, prefix: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_busy_answers_in_each_apis_shape(one_slot_server: LiveServer, occupying_image: bytes) -> None:
    url, key = one_slot_server.url, {"X-Api-Key": KEY}
    refusals_before = _metric(one_slot_server, 'bgremove_images_rejected_total{reason="busy"}')
    with one_slot_server.busy_with(occupying_image, {"X-Api-Key": KEY}):
        ours = httpx.post(url + "/remove", content=photo_bytes(), headers=key)
        theirs = httpx.post(url + "/v1.0/removebg", files={"image_file": photo_bytes()}, headers=key)
    assert ours.status_code == 503
    assert ours.json()["error"]["code"] == "busy"
    assert int(ours.headers["retry-after"]) >= 1
    assert ours.headers["x-request-id"]
    assert theirs.status_code == 503
    assert theirs.json()["errors"][0]["code"] == "busy"
    assert int(theirs.headers["retry-after"]) >= 1
    assert "x-ratelimit-remaining" not in ours.headers  # turned away before it spent a token
    assert _metric(one_slot_server, 'bgremove_images_rejected_total{reason="busy"}') == refusals_before + 2
    assert _metric(one_slot_server, 'bgremove_http_requests_total{method="POST",route="/remove",status="503"}') >= 1


def test_a_caller_without_a_valid_key_learns_that_first(one_slot_server: LiveServer, occupying_image: bytes) -> None:
    url = one_slot_server.url
    with one_slot_server.busy_with(occupying_image, {"X-Api-Key": KEY}):
        missing = httpx.post(url + "/remove", content=photo_bytes())
        wrong = httpx.post(url + "/remove", content=photo_bytes(), headers={"X-Api-Key": "not-the-key"})
        theirs = httpx.post(url + "/v1.0/removebg", files={"image_file": photo_bytes()})
    assert missing.status_code == 401
    assert wrong.status_code == 403
    assert theirs.status_code == 403 and theirs.json()["errors"][0]["code"] == "auth_failed"


def test_other_routes_and_methods_are_not_held_up(one_slot_server: LiveServer, occupying_image: bytes) -> None:
    url = one_slot_server.url
    with one_slot_server.busy_with(occupying_image, {"X-Api-Key": KEY}):
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/v1.0/account", headers={"X-Api-Key": KEY}).status_code == 200
        assert httpx.get(url + "/remove").status_code == 405
    after = httpx.post(url + "/remove", content=photo_bytes(), headers={"X-Api-Key": KEY}, timeout=60)
    assert after.status_code == 200
