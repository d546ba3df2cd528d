"""``GET /metrics`` and the request ids, counted and echoed after real requests to the real app."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.images import photo_bytes


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_requests_images_stages_and_rejections_are_counted(client: httpx.Client) -> None:
    before = scrape(client)

    assert client.post("/remove", content=photo_bytes()).status_code == 200
    assert client.post("/remove", content=b"plain text, not a photo").status_code == 415
    assert client.post("/remove?format=gif", content=photo_bytes()).status_code == 422

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("bgremove_http_requests_total", method="POST", route="/remove", status="200") == 1
    assert delta("bgremove_http_requests_total", method="POST", route="/remove", status="415") == 1
    assert delta("bgremove_http_requests_total", method="POST", route="/remove", status="422") == 1
    assert delta("bgremove_http_request_duration_seconds_count", method="POST", route="/remove") == 3
    assert delta("bgremove_images_processed_total") == 1
    assert delta("bgremove_images_rejected_total", reason="unsupported_format") == 1
    assert delta("bgremove_images_rejected_total", reason="invalid_option") == 1
    for stage in ("decode", "model", "matte", "encode"):
        assert delta("bgremove_stage_duration_seconds_count", stage=stage) == 1
    assert delta("bgremove_stage_duration_seconds_sum", stage="model") > 0.01  # a real inference took time
    assert after[("bgremove_in_flight", ())] == 0 and after[("bgremove_queue_depth", ())] == 0
    assert after[("bgremove_startup_duration_seconds", (("phase", "warm_up"),))] > 0
    assert after[("process_resident_memory_bytes", ())] > 50e6


def test_unknown_paths_share_one_label(client: httpx.Client) -> None:
    client.get("/no/such/thing/1")
    client.get("/no/such/thing/2")

    labels = [key for key in scrape(client) if key[0] == "bgremove_http_requests_total"]
    assert not any("/no/such" in value for _, pairs in labels for _, value in pairs)
    assert any(("route", "unmatched") in pairs for _, pairs in labels)


def test_a_request_id_is_echoed_or_made(client: httpx.Client) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    forged = client.get("/healthz", headers={"X-Request-ID": 'x" level=error fake=1'}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", forged)  # an id that could forge a log line is replaced
