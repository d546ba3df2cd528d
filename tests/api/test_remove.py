"""POST /remove over real HTTP against the real model."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.images import decode, exif_rotated_jpeg, heif_bytes, photo_bytes, png_with_declared_size, to_bytes, tricky_inputs, photo

JPEG = photo_bytes()


def _assert_serving(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.post("/remove?mask=true", content=JPEG, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200


def test_multipart_upload_gives_a_transparent_png(client: httpx.Client) -> None:
    response = client.post("/remove", files={"file": ("cat.jpg", JPEG, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert (response.headers["x-width"], response.headers["x-height"]) == ("680", "440")
    assert float(response.headers["x-processing-time-ms"]) > 0
    image = decode(response.content)
    assert image.mode == "RGBA" and image.size == (680, 440)
    alpha = np.asarray(image)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream", None])
def test_raw_body_is_sniffed_whatever_the_header_says(client: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/remove", content=JPEG, headers=headers)
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (680, 440)


@pytest.mark.parametrize(
    ("query", "media_type", "mode"),
    [
        ("format=png", "image/png", "RGBA"),
        ("format=webp", "image/webp", "RGBA"),
        ("format=jpeg", "image/jpeg", "RGB"),
        ("format=png&bg=%23336699", "image/png", "RGB"),
        ("format=webp&bg=336699", "image/webp", "RGB"),
        ("format=png&bg=%2333669980", "image/png", "RGBA"),
        ("format=jpeg&bg=navy", "image/jpeg", "RGB"),
        ("mask=true", "image/png", "L"),
        ("mask=true&format=jpeg", "image/jpeg", "L"),
        ("mask=true&format=webp", "image/webp", "RGB"),  # WebP has no grayscale mode
    ],
)
def test_formats_and_options(client: httpx.Client, query: str, media_type: str, mode: str) -> None:
    response = client.post(f"/remove?{query}", files={"file": ("p.jpg", JPEG)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = decode(response.content)
    assert image.size == (680, 440) and image.mode == mode


def test_background_colour_fills_the_background(client: httpx.Client) -> None:
    response = client.post("/remove?bg=%23ff0000", files={"file": ("p.jpg", JPEG)})
    pixels = np.asarray(decode(response.content))
    assert tuple(pixels[5, 5]) == (255, 0, 0)
    jpeg = np.asarray(decode(client.post("/remove?format=jpeg", content=JPEG).content))
    assert (jpeg[:10, :10] > 245).all(), "JPEG without bg defaults to white"


def test_crop_returns_the_subject_box(client: httpx.Client) -> None:
    response = client.post("/remove?crop=true", content=JPEG)
    width, height = int(response.headers["x-width"]), int(response.headers["x-height"])
    assert decode(response.content).size == (width, height)
    assert width < 680 and height <= 440


@pytest.mark.parametrize("name", sorted(tricky_inputs()))
def test_tricky_modes_over_http(client: httpx.Client, name: str) -> None:
    data, size = tricky_inputs()[name]
    response = client.post("/remove", files={"file": (name, data)})
    assert response.status_code == 200, response.text
    assert decode(response.content).size == size


def test_heic_from_a_phone_gives_an_upright_png_cutout(client: httpx.Client) -> None:
    heic = heif_bytes(photo(), orientation=6)  # stored 680x440 with irot and EXIF, as phones do: shown 440x680
    response = client.post("/remove", files={"file": ("IMG_0001.HEIC", heic, "image/heic")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = decode(response.content)
    assert image.mode == "RGBA" and image.size == (440, 680)
    alpha = np.asarray(image)[..., 3].astype(int)
    assert alpha.min() == 0 and alpha.max() == 255
    same_as_jpeg = np.asarray(decode(client.post("/remove", content=exif_rotated_jpeg(6)).content))[..., 3]
    assert np.abs(alpha - same_as_jpeg).mean() < 4, "the HEIC's matte differs from the same photo's as JPEG"
    raw = client.post("/remove?mask=true", content=heic, headers={"content-type": "image/heic"})
    assert raw.status_code == 200 and decode(raw.content).size == (440, 680)


def test_existing_alpha_is_combined(client: httpx.Client) -> None:
    data, _ = tricky_inputs()["rgba_png"]  # left half fully transparent
    alpha = np.asarray(decode(client.post("/remove", content=data).content))[..., 3]
    assert alpha[:, :150].max() == 0
    assert alpha[:, 170:].max() == 255


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"", "image/jpeg", 400, "empty_input"),
        (np.random.default_rng(1).bytes(50_000), "image/jpeg", 415, "unsupported_format"),
        (JPEG[: len(JPEG) // 3], "image/jpeg", 422, "unreadable_image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml", 415, "unsupported_format"),
        (png_with_declared_size(100_000, 100_000), "image/png", 413, "image_too_large"),
        (png_with_declared_size(8000, 8000), "image/png", 413, "image_too_large"),
        (b'{"image": "x"}', "application/json", 415, "unsupported_media_type"),
        (b"hello", "text/plain", 415, "unsupported_media_type"),
    ],
    ids=["empty", "random", "truncated", "svg", "bomb", "over-pixel-limit", "json", "text"],
)
def test_bad_input_gives_json_4xx_quickly(client: httpx.Client, body: bytes, content_type: str, status: int, code: str) -> None:
    started = time.perf_counter()
    response = client.post("/remove", content=body, headers={"content-type": content_type})
    assert time.perf_counter() - started < 2.0
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    _assert_serving(client)


def test_bad_input_as_multipart_too(client: httpx.Client) -> None:
    response = client.post("/remove", files={"file": ("x.svg", b"<svg></svg>", "image/svg+xml")})
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_format")
    response = client.post("/remove", files={"photo": ("p.jpg", JPEG)})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")
    response = client.post("/remove", content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 400
    _assert_serving(client)


def test_oversize_upload_is_413_declared_or_streamed(client: httpx.Client) -> None:
    too_big = b"\xff\xd8\xff" + bytes(31 * 1024 * 1024)
    response = client.post("/remove", content=too_big, headers={"content-type": "image/jpeg"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "file_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        for _ in range(32):
            yield bytes(1024 * 1024)

    response = client.post("/remove", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "file_too_large")
    _assert_serving(client)


@pytest.mark.parametrize("query", ["format=gif", "bg=notacolour", "mask=maybe", "crop=2"])
def test_invalid_options_are_422(client: httpx.Client, query: str) -> None:
    response = client.post(f"/remove?{query}", content=JPEG)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_option"


def test_unknown_route_and_method_are_json(client: httpx.Client) -> None:
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    assert client.get("/remove").json()["error"]["code"] == "method_not_allowed"


def test_small_and_tiny_images(client: httpx.Client) -> None:
    for size in [(1, 1), (7, 3), (3000, 20)]:
        data = to_bytes(photo().resize(size), "PNG")
        response = client.post("/remove", content=data)
        assert response.status_code == 200, response.text
        assert decode(response.content).size == size


def test_refine_is_a_per_request_option(client: httpx.Client) -> None:
    plain = client.post("/remove?mask=true&refine=false", content=JPEG)
    refined = client.post("/remove?mask=true&refine=true", content=JPEG)
    assert plain.status_code == refined.status_code == 200
    assert decode(refined.content).size == (680, 440)
    assert plain.content != refined.content
