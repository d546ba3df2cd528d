"""``Expect: 100-continue``, as curl sends it: asked for the body when it is wanted, spared it when refused."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from app.model import SaliencyModel
from app.settings import Settings
from tests.conftest import LiveServer, serving
from tests.images import large_photo_bytes, photo_bytes
from tests.wire import closed_by_server, read_body, read_head


def _open(server: LiveServer) -> socket.socket:
    return socket.create_connection((server.settings.host, server.settings.port), timeout=30)


def _head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: image/jpeg", f"Content-Length: {length}", "Expect: 100-continue", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_an_accepted_upload_is_asked_for_then_cut_out(server: LiveServer) -> None:
    body = photo_bytes()
    with _open(server) as connection:
        buffered = bytearray()
        connection.sendall(_head("/remove", len(body)))
        status, _ = read_head(connection, buffered)
        assert status == 100
        connection.sendall(body)
        status, headers = read_head(connection, buffered)
        assert status == 200
        assert read_body(connection, buffered, int(headers["content-length"])).startswith(b"\x89PNG")
        assert headers.get("connection") != "close"


@pytest.fixture
def one_slot_server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=1, max_queue=0), model) as live:
        yield live


def test_a_busy_server_refuses_before_the_upload_and_closes(one_slot_server: LiveServer) -> None:
    """The 503 comes without a 100, so the client never sends its body; the body it owes ends the connection."""
    with one_slot_server.busy_with(large_photo_bytes(12)), _open(one_slot_server) as connection:
        buffered = bytearray()
        started = time.perf_counter()
        connection.sendall(_head("/remove", 5_000_000))  # promised, never sent
        status, headers = read_head(connection, buffered)
        elapsed = time.perf_counter() - started
        assert status == 503
        assert int(headers["retry-after"]) >= 1
        assert headers["connection"] == "close"
        assert b'"busy"' in read_body(connection, buffered, int(headers["content-length"]))
        assert closed_by_server(connection, buffered)
    assert elapsed < 1.0  # not waiting for a body: curl would wait a whole second before sending it
    assert httpx.post(one_slot_server.url + "/remove", content=photo_bytes(), timeout=60).status_code == 200


@pytest.fixture
def keyed_server(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=1, api_keys=("a-key-0123456789ab",)), model) as live:
        yield live


@pytest.mark.parametrize("path", ["/remove", "/v1.0/removebg"])
def test_a_missing_key_is_refused_before_the_upload(keyed_server: LiveServer, path: str) -> None:
    with _open(keyed_server) as connection:
        buffered = bytearray()
        connection.sendall(_head(path, 5_000_000))
        status, headers = read_head(connection, buffered)
        assert status in (401, 403)  # remove.bg's API answers 403 for a missing key
        assert headers["connection"] == "close"
        read_body(connection, buffered, int(headers["content-length"]))
        assert closed_by_server(connection, buffered)


def test_without_expect_a_refused_upload_keeps_the_connection(keyed_server: LiveServer) -> None:
    """A client that sends its body at once has it dropped, and may reuse the connection."""
    body = photo_bytes()
    with _open(keyed_server) as connection:
        buffered = bytearray()
        for _ in range(2):
            head = f"POST /remove HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
            connection.sendall(head.encode() + body)
            status, headers = read_head(connection, buffered)
            assert status == 401
            assert headers.get("connection") != "close"
            read_body(connection, buffered, int(headers["content-length"]))
