"""image_url and bg_image_url: fetched from a local server only where allow-listed; private targets refused.

The only server these tests reach is their own, on 127.0.0.1. The private and
link-local addresses below (10.0.0.1, 169.254.169.254) are never connected to:
refusing them before any connection is exactly what is tested.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from PIL import Image

from app.errors import ApiError
from app.model import SaliencyModel
from app.settings import Settings
from app.url_fetch import FetchPolicy, fetch_image
from tests.conftest import LiveServer, serving
from tests.images import decode, photo, to_bytes

PHOTO = to_bytes(photo().resize((340, 220)), "JPEG", quality=90)
BACKDROP = to_bytes(Image.new("RGB", (340, 220), (30, 60, 200)), "PNG")
SLOW_SECONDS = 3.0
STALL_SECONDS = 40.0  # how long a stalling server keeps at it when nobody cuts it off: past any test's patience


class _Images(BaseHTTPRequestHandler):
    """Photos, redirects (some to forbidden places), a web page, a 404, a slow and an endless answer."""

    def do_GET(self) -> None:  # http.server's name
        routes = {
            "/photo.jpg": lambda: self._send(200, PHOTO, "image/jpeg"),
            "/backdrop.png": lambda: self._send(200, BACKDROP, "image/png"),
            "/redirect": lambda: self._redirect("/photo.jpg"),
            "/redirect-to-private": lambda: self._redirect("http://10.0.0.1/photo.jpg"),
            "/redirect-to-metadata": lambda: self._redirect("http://169.254.169.254/latest/meta-data/"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
            "/page.html": lambda: self._send(
                200, b"<!doctype html><html><body>" + b"x" * 200 + b"</body></html>", "text/html"
            ),
            "/slow.jpg": self._slow,
            "/endless.jpg": self._endless,
        }
        routes.get(self.path, lambda: self._send(404, b"not found", "text/plain"))()

    def _send(self, status: int, body: bytes, media_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _slow(self) -> None:
        time.sleep(SLOW_SECONDS)
        self._send(200, PHOTO, "image/jpeg")

    def _endless(self) -> None:
        """A JPEG-looking stream with no Content-Length, far past any limit (bounded, in case it is not cut off)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        try:
            self.wfile.write(b"\xff\xd8\xff\xe0" + bytes(60))
            for _ in range(64):
                self.wfile.write(bytes(64 * 1024))
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def fetching_server(model: SaliencyModel) -> Iterator[LiveServer]:
    """Allows exactly 127.0.0.1 (where the image server is); one worker and no queue, to fill it easily."""
    settings = Settings(
        workers=1,
        max_queue=0,
        image_url_allow=("127.0.0.1",),
        image_url_timeout_seconds=1,
        max_upload_bytes=2 * 1024 * 1024,
    )
    with serving(settings, model) as live:
        yield live


def post(server: LiveServer, data: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + "/v1.0/removebg", data=data, timeout=60)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def test_an_allowed_image_url_is_fetched_and_cut_out(fetching_server: LiveServer, images: str) -> None:
    response = post(fetching_server, {"image_url": images + "/photo.jpg", "format": "png"})
    assert response.status_code == 200, response.text
    image = decode(response.content)
    assert image.size == (340, 220) and image.mode == "RGBA"


def test_redirects_are_followed_when_each_hop_is_allowed(fetching_server: LiveServer, images: str) -> None:
    assert post(fetching_server, {"image_url": images + "/redirect", "channels": "alpha"}).status_code == 200


def test_bg_image_url_is_fetched_the_same_way(fetching_server: LiveServer, images: str) -> None:
    response = post(
        fetching_server, {"image_url": images + "/photo.jpg", "bg_image_url": images + "/backdrop.png", "format": "png"}
    )
    assert response.status_code == 200, response.text
    pixels = np.asarray(decode(response.content))
    assert tuple(pixels[2, 2]) == (30, 60, 200)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/redirect-to-private", "image_url_refused"),
        ("/redirect-to-metadata", "image_url_refused"),
        ("/redirect-loop", "image_url_failed"),
        ("/missing.jpg", "image_url_failed"),
        ("/page.html", "image_url_refused"),
    ],
)
def test_bad_targets_are_400(fetching_server: LiveServer, images: str, path: str, code: str) -> None:
    response = post(fetching_server, {"image_url": images + path})
    assert response.status_code == 400, response.text
    assert error_code(response) == code


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/photo.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.jpg",
        "http://0.0.0.0/x.jpg",
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.jpg",
        "http://user:pw@127.0.0.1/x.jpg",
        "not a url",
    ],
)
def test_targets_off_the_allow_list_are_refused_before_any_connection(fetching_server: LiveServer, url: str) -> None:
    response = post(fetching_server, {"image_url": url})
    assert response.status_code == 400, response.text
    assert error_code(response) == "image_url_refused"


def test_a_download_past_the_size_limit_is_413(fetching_server: LiveServer, images: str) -> None:
    response = post(fetching_server, {"image_url": images + "/endless.jpg"})
    assert response.status_code == 413, response.text
    assert error_code(response) == "file_too_large"


def test_a_slow_download_times_out_and_holds_its_worker_meanwhile(fetching_server: LiveServer, images: str) -> None:
    """The fetch runs inside the request's runner slot: with one worker and no queue, others get 503 meanwhile."""
    results: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: results.append(post(fetching_server, {"image_url": images + "/slow.jpg"})))
    started = time.perf_counter()
    slow.start()
    time.sleep(0.3)
    busy = post(fetching_server, {"image_url": images + "/photo.jpg"})
    slow.join()
    assert busy.status_code == 503 and error_code(busy) == "busy" and int(busy.headers["retry-after"]) >= 1
    (timed_out,) = results
    assert timed_out.status_code == 400 and error_code(timed_out) == "image_url_failed"
    assert "longer than" in timed_out.json()["errors"][0]["title"]
    assert time.perf_counter() - started < SLOW_SECONDS


# The policy itself, without HTTP around it: what each allow-list admits.


def policy(*entries: str) -> FetchPolicy:
    return FetchPolicy.from_allow_list(entries, max_bytes=1 << 20, timeout_s=2)


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (("*",), "http://127.0.0.1:9/x.jpg"),  # any public host is not the loopback
        (("*",), "http://localhost:9/x.jpg"),  # a name that resolves to the loopback
        (("*",), "http://[::ffff:10.0.0.1]/x.jpg"),  # an IPv4-mapped private address
        (("example.com",), "http://127.0.0.1:9/x.jpg"),  # not on the list at all
        (("10.0.0.0/8",), "http://169.254.169.254/latest/"),
        (("127.0.0.1",), "http://127.0.0.2:9/x.jpg"),
        ((), "http://127.0.0.1:9/x.jpg"),  # no list: image_url is off
    ],
)
def test_the_policy_refuses_non_public_and_unlisted_targets(entries: tuple[str, ...], url: str) -> None:
    with pytest.raises(ApiError) as raised:
        fetch_image(url, policy(*entries))
    assert raised.value.code == "image_url_refused"


def test_name_rules_match_the_host_and_its_subdomains() -> None:
    rules = policy("example.com", "*.cdn.example.org")
    assert rules.name_allowed("example.com") and rules.name_allowed("EXAMPLE.com.")
    assert not rules.name_allowed("www.example.com") and not rules.name_allowed("badexample.com")
    assert rules.name_allowed("a.cdn.example.org") and rules.name_allowed("cdn.example.org")
    assert not rules.name_allowed("cdn.example.org.evil.com")
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("192.168.1.10")
    assert rules.address_allowed(public, by_name=True) and not rules.address_allowed(private, by_name=True)
    assert not rules.address_allowed(public, by_name=False)
    assert policy("192.168.0.0/16").address_allowed(private, by_name=False)


def test_the_policy_fetches_an_allow_listed_local_image(images: str) -> None:
    assert fetch_image(images + "/photo.jpg", policy("127.0.0.1")) == PHOTO


# Servers that never let one read time out: the whole fetch must still end at its deadline.


def _status_line_a_byte_a_second(connection: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n":
        connection.sendall(bytes([byte]))
        time.sleep(1.0)


def _continue_for_ever(connection: socket.socket) -> None:
    while True:  # http.client skips any number of these
        connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.01)


def _body_a_byte_a_second(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n" + b"\xff\xd8\xff\xe0" + bytes(60))
    while True:
        time.sleep(1.0)
        connection.sendall(b"\0")


class StallingServer:
    """One connection on 127.0.0.1, answered by ``stall`` until it fails (the client hung up) or time runs out."""

    def __init__(self, stall: Callable[[socket.socket], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/stall.jpg"
        self._stall = stall
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(STALL_SECONDS)
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(STALL_SECONDS)
            stopper = threading.Timer(STALL_SECONDS, connection.shutdown, (socket.SHUT_RDWR,))
            stopper.start()
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096) or b"\r\n\r\n"
                self._stall(connection)
            except OSError:
                pass  # the fetch gave up and closed: this thread is free
            finally:
                stopper.cancel()

    def close(self) -> None:
        self._listener.close()


STALLS = [_status_line_a_byte_a_second, _continue_for_ever, _body_a_byte_a_second]


@pytest.mark.parametrize("stall", STALLS, ids=lambda stall: stall.__name__.strip("_"))
def test_a_stalling_server_is_cut_off_at_the_deadline(stall: Callable[[socket.socket], None]) -> None:
    server = StallingServer(stall)
    started = time.monotonic()
    try:
        with pytest.raises(ApiError) as raised:
            fetch_image(server.url, policy("127.0.0.1"))  # a 2 s deadline
        elapsed = time.monotonic() - started
        assert raised.value.status == 400 and raised.value.code == "image_url_failed"
        assert "longer than 2 s" in raised.value.message
        assert 1.9 <= elapsed < 20, elapsed
        server.thread.join(timeout=20)
        assert not server.thread.is_alive(), "the stalling server's thread was never released"
    finally:
        server.close()


@pytest.mark.parametrize("stall", STALLS[:2], ids=lambda stall: stall.__name__.strip("_"))
def test_a_stalling_image_url_is_a_400_and_frees_its_worker(
    fetching_server: LiveServer, images: str, stall: Callable[[socket.socket], None]
) -> None:
    server = StallingServer(stall)
    try:
        response = post(fetching_server, {"image_url": server.url})  # a 1 s deadline
        assert response.status_code == 400 and error_code(response) == "image_url_failed", response.text
        assert "longer than 1 s" in response.json()["errors"][0]["title"]
        assert post(fetching_server, {"image_url": images + "/photo.jpg", "channels": "alpha"}).status_code == 200
        server.thread.join(timeout=20)
        assert not server.thread.is_alive()
    finally:
        server.close()


def test_a_resolver_that_never_answers_is_cut_off_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo cannot be interrupted; the fetch stops waiting for it at the deadline."""
    released = threading.Event()

    def never_answers(*args: object, **kwargs: object) -> list[object]:
        released.wait(30)
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", never_answers)
    policy = FetchPolicy.from_allow_list(("*",), 1 << 20, 1)
    started = time.monotonic()
    try:
        with pytest.raises(ApiError) as caught:
            fetch_image("http://never-resolves.example/photo.jpg", policy)
        assert caught.value.code == "image_url_failed" and "took too long" in caught.value.message
        assert time.monotonic() - started < 15, "the fetch waited for the resolver past its deadline"
    finally:
        released.set()
