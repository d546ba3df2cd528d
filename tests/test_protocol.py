"""The HTTP protocol drops a body the app never read, exactly to its end, over real sockets."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send

from tests.conftest import ThreadedServer
from tests.wire import closed_by_server, free_port, read_body, read_head

QUIET_LIMIT_S = 1  # the server's keep-alive timeout here: a skip that hears nothing for this long ends


async def refuse_posts(scope: Scope, receive: Receive, send: Send) -> None:
    """401 to a POST without reading its body, as our admission and key checks answer; 200 to anything else."""
    if scope["type"] != "http":
        return
    status = 401 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    with ThreadedServer(refuse_posts, free_port(), timeout_keep_alive=QUIET_LIMIT_S) as server:
        yield server.address


def _post_head(length: int) -> bytes:
    lines = ["POST /remove HTTP/1.1", "Host: test", "Content-Type: image/jpeg", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


GET = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"


def _statuses(connection: socket.socket, count: int) -> list[int]:
    """The statuses of the next ``count`` responses."""
    buffered, statuses = bytearray(), []
    for _ in range(count):
        status, headers = read_head(connection, buffered)
        read_body(connection, buffered, int(headers["content-length"]))
        statuses.append(status)
    return statuses


def _send_in_background(connection: socket.socket, data: bytes) -> threading.Thread:
    sender = threading.Thread(target=connection.sendall, args=(data,))
    sender.start()
    return sender


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("body_mb", [0.001, 3, 20])
def test_an_unread_body_is_dropped_to_its_end_and_the_next_request_is_served(
    address: tuple[str, int], body_mb: float
) -> None:
    body = os.urandom(int(body_mb * 1e6))
    with socket.create_connection(address, timeout=10) as connection:
        sender = _send_in_background(connection, _post_head(len(body)) + body + GET + _post_head(3) + b"abc" + GET)
        assert _statuses(connection, 4) == [401, 200, 401, 200]
        sender.join()


def test_a_chunked_body_still_goes_through_the_parser(address: tuple[str, int]) -> None:
    chunk = b"x" * 300_000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    head = b"POST /remove HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(address, timeout=10) as connection:
        sender = _send_in_background(connection, head + chunked + GET)
        assert _statuses(connection, 2) == [401, 200]
        sender.join()


def test_a_client_that_goes_quiet_inside_its_body_is_let_go(address: tuple[str, int]) -> None:
    """uvicorn's parser would wait for the rest of the body for ever."""
    with socket.create_connection(address, timeout=QUIET_LIMIT_S * 10) as connection:
        connection.sendall(_post_head(5_000_000) + b"x" * 1_000_000)
        assert _statuses(connection, 1) == [401]
        started = time.monotonic()
        assert closed_by_server(connection, bytearray())
        assert time.monotonic() - started < QUIET_LIMIT_S * 4


def test_a_client_that_gives_up_inside_its_body_leaves_nothing_open(address: tuple[str, int]) -> None:
    before = _open_fds()
    for _ in range(20):
        with socket.create_connection(address, timeout=10) as connection:
            connection.sendall(_post_head(5_000_000) + b"x" * 1_000_000)
            assert _statuses(connection, 1) == [401]
    deadline = time.monotonic() + 5
    while _open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_fds() <= before  # neither the connections nor the skips' duplicate descriptors
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(GET)
        assert _statuses(connection, 1) == [200]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_under_tls_the_body_goes_through_the_parser(tmp_path: Path) -> None:
    """Dropping TCP bytes would cut TLS records apart: the next request would never decrypt."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-days", "1", "-keyout", str(key), "-out", str(cert)]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", *subject]
    subprocess.run(command, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # our own throwaway certificate
    body = os.urandom(3_000_000)
    with ThreadedServer(refuse_posts, free_port(), ssl_keyfile=str(key), ssl_certfile=str(cert)) as server:
        with context.wrap_socket(socket.create_connection(server.address, timeout=10)) as tls:
            tls.sendall(_post_head(len(body)) + body + GET)  # one thread: an SSL socket is not for two
            assert _statuses(tls, 2) == [401, 200]
