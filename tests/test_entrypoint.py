"""``python -m app``, as ``make run`` starts it: one-line failures, a real start, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.images import REPO, photo_bytes


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


def test_serves_then_stops_cleanly_on_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=REPO, env={**os.environ, "PORT": str(port)}, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the service did not become ready"
            time.sleep(0.1)
        response = httpx.post(url + "/remove", files={"file": ("cat.jpg", photo_bytes())}, timeout=60)
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it ended
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in stderr
