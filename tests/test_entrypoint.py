"""``python -m app``, as ``make run`` starts it: one-line failures, a real start, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images import REPO, large_photo_bytes, photo_bytes


def _run_app(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("content", [None, b"not an onnx file at all"], ids=["missing", "corrupt"])
def test_bad_model_stops_startup_with_one_line(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    result = _run_app({"MODEL_PATH": str(path), "PORT": "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "make model" in lines[0]


def test_bad_setting_stops_startup_with_one_line() -> None:
    result = _run_app({"WORKERS": "many"})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: WORKERS must be an integer, got 'many'"


def test_startup_objects_are_left_out_of_later_collections() -> None:
    """Walking the whole start-up heap, a full collection held the event loop 45 ms (see app/__main__.py)."""
    script = (
        "import gc\n"
        "from app.__main__ import freeze_startup_objects\n"
        "from app.main import create_app\n"
        "app = create_app()\n"
        "tracked = len(gc.get_objects())\n"
        "freeze_startup_objects()\n"
        "print(tracked, len(gc.get_objects()), gc.get_freeze_count())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tracked, still_tracked, frozen = map(int, result.stdout.split())
    assert tracked > 20_000 and frozen >= tracked - 1_000
    assert still_tracked < tracked / 20


class Service:
    """``python -m app`` as a real process on a free port, its stderr kept for the assertions."""

    def __init__(self, open_files: tuple[int, int] | None = None, **env: str) -> None:
        """``open_files``: the soft and hard limits on open descriptors the process starts with."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "app"]
        if open_files is not None:
            limit = f"import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE, {open_files})"
            command = [sys.executable, "-c", limit + "; runpy.run_module('app', run_name='__main__')"]
        self.process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "PORT": str(self.port), **env}, stderr=subprocess.PIPE, text=True
        )
        self.stderr = ""

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and self.process.poll() is None, "the service did not become ready"
            time.sleep(0.1)

    def wait_until(self, condition: Callable[[dict[str, Any]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition(httpx.get(self.url + "/healthz").json()):
            assert time.monotonic() < deadline, "the service never reached the expected state"
            time.sleep(0.01)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, self.stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode


def test_serves_then_stops_cleanly_on_sigterm() -> None:
    service = Service()
    try:
        service.wait_ready()
        response = httpx.post(service.url + "/remove", files={"file": ("cat.jpg", photo_bytes())}, timeout=60)
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    finally:
        returncode = service.stop()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it ended
    assert returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in service.stderr


def test_logs_are_json_lines_carrying_the_request_id() -> None:
    service = Service(LOG_FORMAT="json")
    try:
        service.wait_ready()
        response = httpx.post(
            service.url + "/remove", content=photo_bytes(), headers={"X-Request-ID": "upload-42"}, timeout=60
        )
        assert response.status_code == 200 and response.headers["x-request-id"] == "upload-42"
        httpx.post(service.url + "/remove", content=b"not an image", timeout=60)
    finally:
        service.stop()

    entries = [json.loads(line) for line in service.stderr.splitlines() if line.strip()]  # every line parses
    access = [entry for entry in entries if entry["logger"] == "app.access"]
    served, refused = (entry for entry in access if entry["path"] == "/remove")
    assert served["request_id"] == "upload-42" and served["status"] == 200 and served["method"] == "POST"
    assert served["bytes_out"] > 0 and served["duration_ms"] > 0
    assert refused["status"] == 415 and len(refused["request_id"]) == 32 and refused["request_id"] != "upload-42"
    assert {"time", "level", "message"} <= served.keys()
    assert any("Application startup complete" in entry["message"] for entry in entries)


@pytest.mark.parametrize("drain_seconds", [0, 3])
def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_work(drain_seconds: int) -> None:
    """With a drain, new work gets a 503 and /healthz says stopping; without, new connections are refused."""
    service = Service(WORKERS="1", DRAIN_SECONDS=str(drain_seconds), LOG_FORMAT="text")
    large = large_photo_bytes(12)
    with ThreadPoolExecutor(1) as pool:
        try:
            service.wait_ready()
            in_flight = pool.submit(httpx.post, service.url + "/remove", content=large, timeout=120)
            service.wait_until(lambda health: health["in_flight"] == 1)
            service.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            if drain_seconds:
                health = httpx.get(service.url + "/healthz")
                assert health.status_code == 503 and health.json()["status"] == "stopping"
                refused = httpx.post(service.url + "/remove", content=photo_bytes(), timeout=60)
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
                assert refused.headers["retry-after"] == "1"
            else:
                with pytest.raises(httpx.ConnectError):
                    httpx.post(service.url + "/remove", content=photo_bytes(), timeout=60)
            response = in_flight.result(timeout=120)
            assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
        finally:
            returncode = service.stop()
    assert returncode in (0, -signal.SIGTERM)


def test_the_graceful_timeout_is_a_real_bound() -> None:
    """Past GRACEFUL_TIMEOUT_SECONDS the jobs stop at their next stage boundary (queued ones never start) and
    their clients get 503 shutting_down: no 500, no traceback, and the process ends about a stage later."""
    graceful_s = 2
    service = Service(WORKERS="1", MAX_QUEUE="3", GRACEFUL_TIMEOUT_SECONDS=str(graceful_s), LOG_FORMAT="text")
    big = large_photo_bytes(48)  # a second or more each, so four outlast the timeout
    with ThreadPoolExecutor(4) as pool:
        try:
            service.wait_ready()
            uploads = [pool.submit(httpx.post, service.url + "/remove", content=big, timeout=120) for _ in range(4)]
            service.wait_until(lambda health: health["in_flight"] == 1 and health["waiting"] == 3)
            service.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            responses = [upload.result(timeout=120) for upload in uploads]
        finally:
            returncode = service.stop()
        took = time.monotonic() - signalled
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "shutting_down"
    assert returncode in (0, -signal.SIGTERM)
    assert took < graceful_s + 30  # before: the queue ran on to its end, past the timeout, and 500s
    assert "Traceback" not in service.stderr and "Exception in ASGI application" not in service.stderr


def _open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads the limits from /proc")
def test_at_the_open_file_limit_the_connection_cap_keeps_the_service_answering() -> None:
    """Past the limit accept() fails and the process served no one, logging ~3,000 tracebacks a second."""
    service = Service(open_files=(256, 400), LOG_FORMAT="text")
    connections: list[socket.socket] = []
    try:
        service.wait_ready()
        assert _open_file_limits(service.process.pid) == (400, 400)  # the soft limit raised to the hard one
        for _ in range(450):  # more than the descriptors the process may hold
            connections.append(socket.create_connection(("127.0.0.1", service.port), timeout=30))
        assert httpx.get(service.url + "/healthz", timeout=30).status_code == 200
        response = httpx.post(service.url + "/remove", content=photo_bytes(), timeout=60)
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    finally:
        for connection in connections:
            connection.close()
        service.stop()
    assert "holding at most 222 connections" in service.stderr  # 400 less the backlog of 50 and 128 to spare
    assert "Traceback" not in service.stderr and "out of system resource" not in service.stderr


def test_text_logs_escape_control_characters() -> None:
    """A ``%0a`` in the path is a newline once decoded: written raw, it would start a forged log line."""
    service = Service(LOG_FORMAT="text")
    try:
        service.wait_ready()
        forged = "2030-01-01 00:00:00,000 INFO    app.access: GET /admin 200"
        path = "/nothing%0a" + forged.replace(" ", "%20") + "%0d%1b[2J%e2%80%a8"
        assert httpx.get(service.url + path).status_code == 404
    finally:
        service.stop()
    lines = service.stderr.splitlines()
    assert not any(line.startswith("2030-") for line in lines)
    (logged,) = (line for line in lines if "/nothing" in line)
    assert "/nothing\\n2030-01-01" in logged and "\\r\\x1b[2J\\u2028" in logged
