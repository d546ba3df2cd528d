"""Bodies built to cost more than their share (issue 21, rows 1, 8 and 12): every field is length-capped before it
is parsed, the body is bounded by MAX_UPLOAD_BYTES, the parts are counted, and the parse runs off the event loop.

The inputs are made here; each refusal is a small 4xx with its own code, and the server serves on afterwards.
"""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.removebg import text_body_limit
from tests.api.test_removebg import SMALL, assert_removebg_error
from tests.conftest import LiveServer
from tests.wire import read_body, read_head

MB = 1 << 20
HUGE = b"1" * (40 * MB)
SMALL_B64 = base64.b64encode(SMALL)
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}


def multipart(fields: list[tuple[str, bytes]], boundary: bytes = b"bounded-parsing") -> tuple[bytes, dict[str, str]]:
    parts = [
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % name.encode() + value + b"\r\n"
        for name, value in fields
    ]
    body = b"".join(parts) + b"--" + boundary + b"--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=" + boundary.decode()}


def still_serves(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.post("/v1.0/removebg", data={"image_file_b64": SMALL_B64.decode(), "channels": "alpha"})
    assert response.status_code == 200, response.text


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert_removebg_error(response, status, code)
    assert len(response.content) < 1024, "the error quotes no more than the start of the value"


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded", "json"])
@pytest.mark.parametrize("name", ["crop_margin", "roi", "position"])
def test_a_40_mb_parameter_is_refused_before_it_is_parsed(client: httpx.Client, encoding: str, name: str) -> None:
    if encoding == "multipart":
        body, headers = multipart([("image_file_b64", SMALL_B64), (name, HUGE)])
    elif encoding == "urlencoded":
        body = b"image_file_b64=" + SMALL_B64.replace(b"+", b"%2B") + b"&" + name.encode() + b"=" + HUGE
        headers = URLENCODED
    else:
        body, headers = b'{"image_file_b64": "' + SMALL_B64 + b'", "' + name.encode() + b'": "' + HUGE + b'"}', JSON
    refused(client.post("/v1.0/removebg", content=body, headers=headers), 413, "field_too_large")
    still_serves(client)


@pytest.mark.parametrize("digits", [250, 309, 400])
def test_a_roi_of_hundreds_of_digits_is_a_4xx_not_an_overflow(client: httpx.Client, digits: int) -> None:
    roi = "0 0 " + "9" * digits + " 10"
    response = client.post("/v1.0/removebg", data={"image_file_b64": SMALL_B64.decode(), "roi": roi})
    if len(roi) > 256:
        refused(response, 413, "field_too_large")
    else:
        refused(response, 400, "invalid_parameter")  # a number, but beyond any picture
    still_serves(client)


@pytest.mark.parametrize("colour", ["rgb(999,0,0)", "hsl(0,1000%,50%)", "rgba(1,2,3,999)"])
def test_a_colour_beyond_a_byte_is_invalid(client: httpx.Client, colour: str) -> None:
    response = client.post("/v1.0/removebg", data={"image_file_b64": SMALL_B64.decode(), "bg_color": colour})
    refused(response, 400, "invalid_parameter")


@pytest.mark.parametrize("path", ["/v1.0/removebg", "/remove"])
def test_a_boundary_over_256_bytes_is_400(client: httpx.Client, path: str) -> None:
    body, headers = multipart([("image_file", SMALL), ("file", SMALL)], boundary=b"b" * 300)
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert b"bad_multipart_boundary" in response.content
    body, headers = multipart([("image_file", SMALL)], boundary=b"b" * 256)  # python-multipart's own limit holds
    assert client.post("/v1.0/removebg", content=body, headers=headers).status_code == 200


@pytest.mark.parametrize(("path", "parts"), [("/v1.0/removebg", 550_000), ("/remove", 100_000)])
def test_hundreds_of_thousands_of_parts_are_refused_at_the_65th(client: httpx.Client, path: str, parts: int) -> None:
    body, headers = multipart([("x", b"1")] * parts)
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 413 and b"too_many_fields" in response.content, response.text
    still_serves(client)


def test_64_parts_are_still_a_form(client: httpx.Client) -> None:
    body, headers = multipart([("image_file", SMALL), ("channels", b"alpha")] + [("unknown", b"1")] * 62)
    assert client.post("/v1.0/removebg", content=body, headers=headers).status_code == 200


def test_65_urlencoded_pairs_or_json_members_are_too_many(client: httpx.Client) -> None:
    pairs = b"&".join(b"x%d=1" % index for index in range(65))
    refused(client.post("/v1.0/removebg", content=pairs, headers=URLENCODED), 413, "too_many_fields")
    members = b"{" + b",".join(b'"x%d": 1' % index for index in range(65)) + b"}"
    refused(client.post("/v1.0/removebg", content=members, headers=JSON), 413, "too_many_fields")


def test_a_json_body_of_millions_of_values_is_refused_before_json_loads(client: httpx.Client) -> None:
    # 4 M empty arrays would be ~300 MB of Python objects: the commas are counted first
    body = b'{"image_file_b64": "' + SMALL_B64 + b'", "x": [' + b",".join([b"[]"] * 4_000_000) + b"]}"
    refused(client.post("/v1.0/removebg", content=body, headers=JSON), 413, "too_many_fields")
    still_serves(client)


@pytest.mark.parametrize(
    "header",
    [b"X-Pad: 1\r\n" * 20, b"X-Pad: " + b"p" * (1 * MB) + b"\r\n"],
    ids=["many-headers", "a-1-mb-header"],
)
def test_a_part_with_too_many_or_too_large_headers_is_refused(client: httpx.Client, header: bytes) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image_file"\r\n' + header + b"\r\n" + SMALL + b"\r\n--b--\r\n"
    )
    response = client.post("/v1.0/removebg", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    refused(response, 413, "part_headers_too_large")


def test_an_over_limit_urlencoded_body_is_refused_by_its_declared_length(server: LiveServer) -> None:
    declared = text_body_limit(server.settings.max_upload_bytes) + 1
    with socket.create_connection(("127.0.0.1", server.settings.port)) as connection:
        connection.sendall(
            b"POST /v1.0/removebg HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\nimage_file_b64=AAAA" % declared
        )
        connection.settimeout(30)
        buffered = bytearray()
        status, headers = read_head(connection, buffered)  # answered with the body unsent: the length alone refuses it
        body = read_body(connection, buffered, int(headers["content-length"]))
    assert status == 413 and b"file_too_large" in body


def test_an_over_limit_urlencoded_body_is_refused_while_streaming(client: httpx.Client, server: LiveServer) -> None:
    limit = text_body_limit(server.settings.max_upload_bytes)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the count must stop it
        yield b"x="
        for _ in range(limit // MB + 2):
            yield b"a" * MB

    refused(client.post("/v1.0/removebg", content=chunks(), headers=URLENCODED), 413, "file_too_large")
    under = b"image_file_b64=AAAA&unknown=" + b"a" * (limit - 1024)  # a body just under the bound is read and parsed
    refused(client.post("/v1.0/removebg", content=under, headers=URLENCODED), 400, "unsupported_format")
    still_serves(client)


def in_flight_bytes(client_port: int, server_port: int) -> int:
    """Bytes our upload has sent that the server's process has not yet read: both sockets' queues in /proc/net/tcp."""
    queued = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, _, queues = line.split()[1:5]
        ports = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16))
        send_queue, receive_queue = (int(size, 16) for size in queues.split(":"))
        if ports == (client_port, server_port):
            queued += send_queue
        elif ports == (server_port, client_port):
            queued += receive_queue
    return queued


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the socket queues from Linux's /proc")
def test_healthz_answers_while_a_large_urlencoded_body_is_parsed(server: LiveServer) -> None:
    """Once the server has read the whole body, the parse of its 14 M escapes takes a second or more of CPU on any
    machine, and nothing follows it but the refusal; had it run on the event loop, no /healthz could be answered
    before the removebg answer came. Every wait here is generous, and none is the verdict."""
    value = b"%FF" * 14_000_000  # 42 MB, under the urlencoded bound; unescaped, not UTF-8: refused straight after
    body = b"image_file_b64=" + value
    head = (
        b"POST /v1.0/removebg HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    answered_during_parse = 0
    with socket.create_connection(("127.0.0.1", server.settings.port)) as upload, httpx.Client(timeout=60) as probe:
        upload.sendall(head + body)
        deadline = time.monotonic() + 60
        while in_flight_bytes(upload.getsockname()[1], server.settings.port):  # the server reads the last of it
            assert time.monotonic() < deadline, "the server never read the whole body"
            time.sleep(0.001)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert probe.get(server.url + "/healthz").status_code == 200
            if select.select([upload], [], [], 0)[0]:
                break  # the removebg answer has come
            answered_during_parse += 1
        upload.settimeout(60)
        answer = upload.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400") and b"invalid_parameter" in answer
    assert answered_during_parse >= 3, "/healthz was not answered while the body was parsed"
