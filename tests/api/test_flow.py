"""A request's flow under clients that stall or leave: bodies within deadlines and a memory budget, holding no
worker while they come; jobs dropped or stopped once nobody waits for them."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from app.model import SaliencyModel
from app.settings import Settings
from tests.conftest import LiveServer, serving
from tests.images import large_photo_bytes, photo_bytes
from tests.wire import closed_by_server, read_body, read_head

IDLE_S = 2  # a body silent this long is cut: short, so the tests are; every wait below allows ten times it
GENEROUS_S = 10 * IDLE_S


@pytest.fixture(scope="module")
def one_worker(model: SaliencyModel) -> Iterator[LiveServer]:
    """WORKERS=1 MAX_QUEUE=0: one place in all. Bodies must keep 1 KB/s past a 2 s grace."""
    settings = Settings(
        workers=1, max_queue=0, upload_idle_seconds=IDLE_S, upload_min_bytes_per_second=1024,
        max_upload_bytes=1_000_000,
    )
    with serving(settings, model) as live:
        yield live


@pytest.fixture(scope="module")
def one_worker_one_queued(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=1, max_queue=1), model) as live:
        yield live


@pytest.fixture(scope="module")
def big_image() -> bytes:
    """Seconds of work for one worker, so that there is time to leave while it runs."""
    return large_photo_bytes(48)


def _open(server: LiveServer) -> socket.socket:
    return socket.create_connection((server.settings.host, server.settings.port), timeout=GENEROUS_S)


def _head(length: int, expect_continue: bool = False, path: str = "/remove") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: image/jpeg", f"Content-Length: {length}"]
    if expect_continue:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _refusal(connection: socket.socket, buffered: bytearray, closing: bool = True) -> tuple[int, str]:
    """The status and error code of the answer, which ends the connection if ``closing``."""
    status, headers = read_head(connection, buffered)
    body = json.loads(read_body(connection, buffered, int(headers["content-length"])))
    assert (headers.get("connection") == "close") == closing
    if closing:
        try:
            assert closed_by_server(connection, buffered)
        except ConnectionResetError:  # a byte sent after the close is answered with a reset: closed too
            pass
    error = body["error"] if "error" in body else body["errors"][0]
    return status, error["code"]


def _metric(server: LiveServer, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _wait_for(condition: object, what: str, timeout: float = GENEROUS_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_silent_uploads_hold_no_worker_and_are_cut(one_worker: LiveServer) -> None:
    """Ten uploads that send their headers and then nothing; half were asked for their body (100 Continue),
    which proves the route is waiting for it. The one worker still serves others, and all ten get 408."""
    connections = [_open(one_worker) for _ in range(10)]
    buffers = [bytearray() for _ in connections]
    try:
        for index, connection in enumerate(connections):
            connection.sendall(_head(500_000, expect_continue=index % 2 == 0))
        for index in range(0, 10, 2):
            assert read_head(connections[index], buffers[index])[0] == 100
        started = time.monotonic()
        served = httpx.post(one_worker.url + "/remove", content=photo_bytes(), timeout=60)
        assert served.status_code == 200, served.text  # before: 503, the silent ones held the only place
        for connection, buffered in zip(connections, buffers, strict=True):
            assert _refusal(connection, buffered) == (408, "request_timeout")
        assert time.monotonic() - started < GENEROUS_S
    finally:
        for connection in connections:
            connection.close()
    assert httpx.get(one_worker.url + "/healthz").json()["in_flight"] == 0
    assert httpx.post(one_worker.url + "/remove", content=photo_bytes(), timeout=60).status_code == 200


def test_nothing_after_100_continue_is_cut(one_worker: LiveServer) -> None:
    with _open(one_worker) as connection:
        buffered = bytearray()
        connection.sendall(_head(100_000, expect_continue=True, path="/v1.0/removebg").replace(
            b"image/jpeg", b"multipart/form-data; boundary=x"
        ))
        assert read_head(connection, buffered)[0] == 100
        started = time.monotonic()
        assert _refusal(connection, buffered) == (408, "request_timeout")  # remove.bg's shape, our code
        assert IDLE_S - 0.5 < time.monotonic() - started < GENEROUS_S


def test_a_trickling_body_is_cut_by_the_rate_rule(one_worker: LiveServer) -> None:
    """A byte every 0.5 s never leaves the body silent for 2 s: only its average rate gives it away."""
    stop = threading.Event()

    with _open(one_worker) as connection:

        def trickle() -> None:
            try:
                while not stop.wait(0.5):
                    connection.sendall(b"x")
            except OSError:
                pass  # the server closed the connection

        connection.sendall(_head(500_000) + b"x")
        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            assert _refusal(connection, bytearray()) == (408, "upload_too_slow")
        finally:
            stop.set()
            sender.join()
    assert httpx.post(one_worker.url + "/remove", content=photo_bytes(), timeout=60).status_code == 200


def test_bodies_on_their_way_share_a_memory_budget(one_worker: LiveServer) -> None:
    """The budget is what the places could hold (here 1 x 1 MB): a body that stalls holding most of it leaves
    room to no other upload, which is refused 503 busy, not buffered; the budget comes back once it is cut."""
    held = 900_000
    with _open(one_worker) as stalled, _open(one_worker) as other:
        stalled.sendall(_head(held + 1) + b"\xff" * held)
        _wait_for(lambda: _metric(one_worker, "bgremove_request_body_bytes") == held, "the stalled body never arrived")
        other.sendall(_head(300_000) + b"\xff" * 300_000)
        assert _refusal(other, bytearray(), closing=False) == (503, "busy")  # the rest is dropped unread
        assert _refusal(stalled, bytearray()) == (408, "request_timeout")
    _wait_for(lambda: _metric(one_worker, "bgremove_request_body_bytes") == 0, "the budget never came back")
    assert httpx.post(one_worker.url + "/remove", content=photo_bytes(), timeout=60).status_code == 200


def test_a_queued_job_whose_client_left_never_runs(one_worker_one_queued: LiveServer, big_image: bytes) -> None:
    server = one_worker_one_queued
    health = server.url + "/healthz"
    dropped = _metric(server, 'bgremove_jobs_stopped_total{when="queued"}')
    with server.busy_with(big_image):  # and it is still running at the end: the queued job never had a worker
        body = photo_bytes()
        with _open(server) as connection:
            connection.sendall(_head(len(body)) + body)
            _wait_for(lambda: httpx.get(health).json()["waiting"] == 1, "the second upload never queued")
        _wait_for(lambda: httpx.get(health).json()["waiting"] == 0, "the queued job outlived its client")
        assert _metric(server, 'bgremove_jobs_stopped_total{when="queued"}') == dropped + 1
    assert httpx.post(server.url + "/remove", content=photo_bytes(), timeout=60).status_code == 200


def test_a_running_job_whose_client_left_stops(one_worker_one_queued: LiveServer, big_image: bytes) -> None:
    server = one_worker_one_queued
    stopped = _metric(server, 'bgremove_jobs_stopped_total{when="running"}')
    processed = _metric(server, "bgremove_images_processed_total")
    with _open(server) as connection:
        connection.sendall(_head(len(big_image)) + big_image)
        _wait_for(lambda: httpx.get(server.url + "/healthz").json()["in_flight"] == 1, "the job never started")
    _wait_for(lambda: httpx.get(server.url + "/healthz").json()["in_flight"] == 0, "the job never stopped")
    assert _metric(server, 'bgremove_jobs_stopped_total{when="running"}') == stopped + 1  # at a stage boundary
    assert _metric(server, "bgremove_images_processed_total") == processed  # it never finished
    assert _metric(server, 'bgremove_images_rejected_total{reason="client_closed_request"}') >= 1
    assert httpx.post(server.url + "/remove", content=photo_bytes(), timeout=60).status_code == 200
