"""GET /healthz: 503 while warming up, 200 with the model's facts, fast under load."""

from __future__ import annotations

import threading
import time

import httpx

from app.settings import Settings
from tests.conftest import LiveServer
from tests.images import large_photo_bytes


def test_starting_then_ok_with_model_facts() -> None:
    """The default, u2net-int8, and u2netp beside it: both loaded from models/ and warmed."""
    live = LiveServer(Settings(workers=1, solo_threads=2, models=("u2netp",))).start()  # loads and warms its own
    try:
        first = httpx.get(live.url + "/healthz")
        assert first.status_code == 503
        assert first.json() == {"status": "starting"}
        live.wait_ready()
        body = httpx.get(live.url + "/healthz").json()
        assert body["status"] == "ok"
        model = body["model"]
        assert model["name"] == "u2net-int8" and body["default_model"] == "u2net-int8" and body["quality"] == "balanced"
        assert model["precision"] == "int8"
        assert [loaded["name"] for loaded in body["models"]] == ["u2net-int8", "u2netp"]
        assert body["models"][0] == model and body["models"][1]["sha256"].startswith("309c8469")
        assert (model["input_width"], model["input_height"]) == (320, 320)
        assert model["provider"] == "CPUExecutionProvider"
        assert model["onnxruntime_version"] and body["version"]
        assert body["startup_ms"]["warm_up"] > 0
        assert (body["workers"], body["intra_op_threads"], body["solo_threads"]) == (1, 1, 2)
    finally:
        live.stop()


def test_healthz_stays_fast_while_large_images_are_processed(client: httpx.Client) -> None:
    big = large_photo_bytes(12)
    statuses: list[int] = []

    def upload() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=120) as own:
            statuses.append(own.post("/remove", content=big).status_code)

    workers = [threading.Thread(target=upload) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # let the uploads land and the pool fill
    latencies = []
    while any(worker.is_alive() for worker in workers) and len(latencies) < 40:
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    for worker in workers:
        worker.join()
    assert len(latencies) >= 10, "the large images finished too fast to measure anything"
    assert max(latencies) < 0.1, sorted(latencies)[-5:]
    assert set(statuses) <= {200, 503} and 200 in statuses


def test_openapi_describes_routes_parameters_and_errors(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    remove = spec["paths"]["/remove"]["post"]
    assert {p["name"] for p in remove["parameters"]} == {"format", "bg", "mask", "crop", "refine", "model", "quality"}
    assert set(remove["requestBody"]["content"]) == {"multipart/form-data", "application/octet-stream", "image/*"}
    assert {"200", "400", "413", "415", "422", "503"} <= set(remove["responses"])
    assert "/healthz" in spec["paths"]
