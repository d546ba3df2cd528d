"""HTTP/1.1 on a raw socket, for tests that need what an HTTP client hides: 100s, early answers, closes."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_head(connection: socket.socket, buffered: bytearray) -> tuple[int, dict[str, str]]:
    """One response's status and headers; what follows them stays in ``buffered``."""
    while b"\r\n\r\n" not in buffered:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed before a response"
        buffered += chunk
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    buffered[:] = rest
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers


def read_body(connection: socket.socket, buffered: bytearray, length: int) -> bytes:
    while len(buffered) < length:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed inside a response body"
        buffered += chunk
    body, buffered[:] = bytes(buffered[:length]), buffered[length:]
    return body


def closed_by_server(connection: socket.socket, buffered: bytearray) -> bool:
    return not buffered and connection.recv(1) == b""
