"""What one connection may hold, over real sockets against the real app: the header deadline, the head's size and
field count, the connection cap, and whose X-Forwarded-For is believed.

Timers are configured short and given ten times their length before a test fails; a verdict never depends on
how fast the machine is, only on the answer, and on the server still answering afterwards.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Self

import httpx
import pytest

from app.model import SaliencyModel
from app.settings import Settings
from tests.conftest import LiveServer, serving
from tests.images import photo, to_bytes
from tests.wire import closed_by_server, read_body, read_head

HEADER_TIMEOUT_S = 1
GENEROUS_S = 10 * HEADER_TIMEOUT_S
SMALL_PHOTO = to_bytes(photo().resize((170, 110)), "JPEG", quality=90)
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.fixture(scope="module")
def strict(model: SaliencyModel) -> Iterator[LiveServer]:
    """The app with a one-second header deadline."""
    with serving(Settings(workers=2, header_timeout_seconds=HEADER_TIMEOUT_S), model) as live:
        yield live


def _open(server: LiveServer, timeout: float = GENEROUS_S) -> socket.socket:
    return socket.create_connection((server.settings.host, server.settings.port), timeout=timeout)


def _answer(connection: socket.socket, buffered: bytearray | None = None) -> tuple[int, dict[str, str], bytes]:
    buffered = bytearray() if buffered is None else buffered
    status, headers = read_head(connection, buffered)
    return status, headers, read_body(connection, buffered, int(headers["content-length"]))


def _error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def _served_normally(server: LiveServer) -> None:
    assert httpx.get(server.url + "/healthz", timeout=GENEROUS_S).status_code == 200
    response = httpx.post(server.url + "/remove?mask=true", content=SMALL_PHOTO, timeout=60)
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


@contextmanager
def _probing(server: LiveServer) -> Iterator[None]:
    """/healthz asked again and again meanwhile; every answer must be a 200."""
    statuses: list[int | str] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                statuses.append(httpx.get(server.url + "/healthz", timeout=GENEROUS_S).status_code)
            except httpx.HTTPError as error:
                statuses.append(repr(error))
            stop.wait(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        yield
    finally:
        stop.set()
        prober.join()
    assert statuses and set(statuses) == {200}, statuses


class _Trickle:
    """Sends ``head``, then one more byte of a header value every ``interval`` seconds, until the server stops it."""

    def __init__(self, connection: socket.socket, head: bytes, interval: float) -> None:
        self.connection, self.head, self.interval = connection, head, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.connection.sendall(self.head)
            while not self.stop.wait(self.interval):
                self.connection.sendall(b"a")
        except OSError:
            pass

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(strict: LiveServer) -> None:
    with _open(strict) as connection:
        started = time.monotonic()
        assert connection.recv(1) == b""  # closed quietly: no request was begun, so none is answered
        assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9


def test_a_slowloris_head_is_cut_at_its_deadline_with_408(strict: LiveServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: "
    with _probing(strict), _open(strict) as connection, _Trickle(connection, head, interval=0.1):
        started = time.monotonic()
        buffered = bytearray()
        status, headers, body = _answer(connection, buffered)
        elapsed = time.monotonic() - started
        assert status == 408 and _error_code(body) == "header_timeout"
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
        assert closed_by_server(connection, buffered)
    assert HEADER_TIMEOUT_S * 0.9 <= elapsed < GENEROUS_S  # a byte every 0.1 s did not extend it
    _served_normally(strict)


def test_each_next_request_on_a_connection_has_its_own_deadline_from_its_first_byte(strict: LiveServer) -> None:
    with _open(strict) as connection:
        connection.sendall(GET_HEALTHZ)
        assert _answer(connection)[0] == 200
        time.sleep(HEADER_TIMEOUT_S * 1.5)  # idle past one header deadline, within the keep-alive timeout
        connection.sendall(GET_HEALTHZ)
        assert _answer(connection)[0] == 200  # idling is the keep-alive timeout's business
        with _Trickle(connection, b"GET /healthz HTTP/1.1\r\n", interval=0.1):
            started = time.monotonic()
            status, _, body = _answer(connection)
            assert status == 408 and _error_code(body) == "header_timeout"
            assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9


class _Flood:
    """Sends ``head`` and then ``total`` bytes of one header value in 64 KB pieces, counting what went out."""

    def __init__(self, connection: socket.socket, head: bytes, total: int) -> None:
        self.connection, self.head, self.total = connection, head, total
        self.sent = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        piece = b"a" * 65536
        try:
            self.connection.sendall(self.head)
            while self.sent < self.total:
                self.connection.sendall(piece)
                self.sent += len(piece)
        except OSError:  # the server has closed the connection
            pass

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.thread.join()


def test_a_huge_header_is_refused_with_431_long_before_it_ends(strict: LiveServer) -> None:
    """Counted as it arrives: parsed whole, a 96 MB header took 34 s of the event loop."""
    total = 512 << 20
    with _probing(strict), _open(strict) as connection:
        with _Flood(connection, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ", total) as flood:
            buffered = bytearray()
            status, headers, body = _answer(connection, buffered)
            sent_before_the_answer = flood.sent
            assert status == 431 and _error_code(body) == "headers_too_large"
            assert headers["connection"] == "close"
            assert closed_by_server(connection, buffered)
        assert sent_before_the_answer < total
        assert flood.sent < total  # the server closed the connection instead of reading it all
    _served_normally(strict)


@pytest.mark.parametrize(("fields", "status"), [(100, 200), (101, 431)])
def test_at_most_a_hundred_header_fields(strict: LiveServer, fields: int, status: int) -> None:
    lines = ["GET /healthz HTTP/1.1", "Host: test", *(f"X-Field-{n}: {n}" for n in range(fields - 1))]
    with _open(strict) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answered, _, body = _answer(connection)
        assert answered == status
        if status == 431:
            assert _error_code(body) == "headers_too_large"
    _served_normally(strict)


def test_heads_within_the_limits_are_served_after_a_body_and_pipelined(strict: LiveServer) -> None:
    """A head is counted from its own first byte, not from the body or the requests before it in the same read."""
    big_header = "X-Big: " + "b" * 30_000  # under the 32 KB limit
    junk = bytes(300_000)
    post = f"POST /remove HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nContent-Length: {len(junk)}\r\n\r\n"
    get = f"GET /healthz HTTP/1.1\r\nHost: test\r\n{big_header}\r\n\r\n".encode()
    with _open(strict) as connection:
        connection.sendall(post.encode() + junk + get + get)
        buffered = bytearray()
        assert [_answer(connection, buffered)[0] for _ in range(3)] == [415, 200, 200]
        connection.sendall(GET_HEALTHZ * 50)
        assert [_answer(connection, buffered)[0] for _ in range(50)] == [200] * 50


def test_a_thousand_idle_connections_leave_healthz_and_images_working(model: SaliencyModel) -> None:
    with serving(Settings(workers=1), model) as live, ExitStack() as stack:
        idle = [stack.enter_context(_open(live)) for _ in range(1000)]
        _served_normally(live)
        idle[0].sendall(GET_HEALTHZ)  # the idle ones are held, not dropped to make room
        assert _answer(idle[0])[0] == 200


CAP = 16  # the smallest MAX_CONNECTIONS allowed


@pytest.fixture(scope="module")
def capped(model: SaliencyModel) -> Iterator[LiveServer]:
    with serving(Settings(workers=1, max_connections=CAP), model) as live:
        yield live


def _until_served(server: LiveServer) -> None:
    """Closed connections leave the server's count an instant after the client closes them."""
    deadline = time.monotonic() + GENEROUS_S
    while True:
        with _open(server) as connection:
            connection.sendall(GET_HEALTHZ)
            try:
                if _answer(connection)[0] == 200:
                    return
            except (AssertionError, OSError):
                pass
        assert time.monotonic() < deadline, "the server never served again"
        time.sleep(0.05)


def test_past_the_cap_the_connection_idle_longest_is_closed_for_the_new_one(capped: LiveServer) -> None:
    _until_served(capped)
    with ExitStack() as stack:
        held = [stack.enter_context(_open(capped)) for _ in range(CAP)]
        for connection in held:  # each answered: the server holds them idle, in this order
            connection.sendall(GET_HEALTHZ)
            assert _answer(connection)[0] == 200
        with _open(capped) as newcomer:
            newcomer.sendall(GET_HEALTHZ)
            assert _answer(newcomer)[0] == 200
        assert closed_by_server(held[0], bytearray())
        held[1].sendall(GET_HEALTHZ)
        assert _answer(held[1])[0] == 200


def test_when_every_connection_is_busy_a_new_one_gets_503(capped: LiveServer) -> None:
    _until_served(capped)
    with ExitStack() as stack:
        for _ in range(CAP):  # each has begun its next request's head: none is idle
            connection = stack.enter_context(_open(capped))
            connection.sendall(GET_HEALTHZ + b"GET /healthz HTTP/1.1\r\n")
            assert _answer(connection)[0] == 200
        with _open(capped) as newcomer:
            buffered = bytearray()
            status, headers, body = _answer(newcomer, buffered)
            assert status == 503 and _error_code(body) == "too_many_connections"
            assert headers["retry-after"] == "1"
            assert closed_by_server(newcomer, buffered)
    _until_served(capped)
    _served_normally(capped)


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "FORWARDED_ALLOW_IPS=127.0.0.1"])
def test_x_forwarded_for_is_believed_only_from_the_proxies_named(model: SaliencyModel, trusted: bool) -> None:
    """What the app takes for the client shows in the rate limit: one image a minute per client address."""
    settings = Settings(workers=1, rate_limit_per_minute=1, forwarded_allow_ips=("127.0.0.1",) if trusted else ())
    with serving(settings, model) as live:

        def remove_as(forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return httpx.post(live.url + "/remove?mask=true", content=SMALL_PHOTO, headers=headers, timeout=60).status_code

        first, second, first_again = remove_as("203.0.113.1"), remove_as("203.0.113.2"), remove_as("203.0.113.1")
    assert first == 200
    if trusted:
        assert (second, first_again) == (200, 429)  # two clients behind the proxy, each its own bucket
    else:
        assert (second, first_again) == (429, 429)  # one client on loopback, whatever it claims


def _chunked(data: bytes, piece: int = 65536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i : i + piece]), data[i : i + piece]) for i in range(0, len(data), piece))


CHUNKED_POST = b"POST /remove?mask=true HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_chunked_upload_with_a_trailer_is_served(strict: LiveServer) -> None:
    with _open(strict) as connection:
        connection.sendall(CHUNKED_POST + _chunked(SMALL_PHOTO, 1000) + b"0\r\nX-Checksum: 1234\r\n\r\n")
        status, _, body = _answer(connection)
        assert status == 200 and body.startswith(b"\x89PNG")


def test_a_huge_trailer_ends_the_connection_long_before_it_ends(strict: LiveServer) -> None:
    """Trailers are headers after a chunked body, grown by the same concatenation."""
    total = 512 << 20
    with _probing(strict), _open(strict) as connection:
        with _Flood(connection, CHUNKED_POST + _chunked(SMALL_PHOTO) + b"0\r\nX-Big: ", total) as flood:
            connection.settimeout(GENEROUS_S)
            try:
                while connection.recv(65536):  # whatever the app answers to a broken upload; then the close
                    pass
            except ConnectionResetError:
                pass
        assert flood.sent < total
    _served_normally(strict)
