"""POST /v1.0/removebg and GET /v1.0/account over real HTTP against the real model: every parameter and error."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import decode, large_photo_bytes, photo, photo_bytes, png_with_declared_size, to_bytes

JPEG = photo_bytes()  # 680 x 440: preview (0.25 MP) shrinks it to 621 x 402
BIG = large_photo_bytes(2.0)
SMALL = to_bytes(photo().resize((340, 220)), "JPEG", quality=90)  # under every size limit: kept as is
PREVIEW = (621, 402)


def post(
    client: httpx.Client, data: dict[str, str] | None = None, image: bytes | None = SMALL, **kwargs: object
) -> httpx.Response:
    files = {"image_file": ("photo.jpg", image, "image/jpeg")} if image is not None else None
    return client.post("/v1.0/removebg", data=data or {}, files=files, **kwargs)  # type: ignore[arg-type]


def ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


def alpha_of(response: httpx.Response) -> np.ndarray:
    return np.asarray(decode(response.content).convert("RGBA"))[..., 3]


def assert_removebg_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    (error,) = response.json()["errors"]
    assert error["code"] == code and error["title"] and error["detail"]


def test_a_multipart_upload_answers_as_remove_bg_does(client: httpx.Client) -> None:
    response = ok(post(client, image=JPEG))

    assert response.headers["content-type"] == "image/png"  # format=auto with transparency
    image = decode(response.content)
    assert image.mode == "RGBA" and image.size == PREVIEW  # size=preview is the default
    assert (response.headers["x-width"], response.headers["x-height"]) == ("621", "402")
    assert response.headers["x-type"] == "other"  # type=auto: we do not classify
    assert response.headers["x-credits-charged"] == "0"
    top, left = int(response.headers["x-foreground-top"]), int(response.headers["x-foreground-left"])
    width, height = int(response.headers["x-foreground-width"]), int(response.headers["x-foreground-height"])
    alpha = np.asarray(image)[..., 3]
    rows, cols = np.flatnonzero(alpha.max(axis=1) > 8), np.flatnonzero(alpha.max(axis=0) > 8)
    assert (top, left, top + height, left + width) == (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    assert alpha.min() == 0 and alpha.max() == 255


@pytest.mark.parametrize(
    ("size", "megapixels"),
    [("regular", 0.25), ("medium", 1.5), ("hd", None), ("full", None)],  # the 2 MP photo is under hd's 4 MP
)
def test_size_shrinks_the_photo_to_its_limit_keeping_the_aspect(
    client: httpx.Client, size: str, megapixels: float | None
) -> None:
    source = Image.open(io.BytesIO(BIG)).size
    response = ok(post(client, {"size": size, "channels": "alpha", "format": "jpg"}, image=BIG))
    width, height = decode(response.content).size
    if megapixels is None:
        assert (width, height) == source
    else:
        assert 0.97 * megapixels * 1e6 <= width * height <= megapixels * 1e6
        assert abs(width / height - source[0] / source[1]) < 0.01


def test_a_photo_under_the_size_limit_keeps_its_size(client: httpx.Client) -> None:
    assert decode(ok(post(client)).content).size == (340, 220)


@pytest.mark.parametrize(("given", "reported"), [("auto", "other"), ("Person", "person")])
def test_type_is_accepted_and_echoed(client: httpx.Client, given: str, reported: str) -> None:
    response = ok(post(client, {"type": given, "type_level": "latest", "channels": "alpha"}))
    assert response.headers["x-type"] == reported


@pytest.mark.parametrize(
    ("data", "media_type", "mode"),
    [
        ({"format": "png"}, "image/png", "RGBA"),
        ({"format": "jpg"}, "image/jpeg", "RGB"),
        ({"format": "webp"}, "image/webp", "RGBA"),
        ({"format": "auto", "bg_color": "81d4fa"}, "image/jpeg", "RGB"),  # opaque: auto picks JPEG
        ({"format": "png", "bg_color": "#81d4fa"}, "image/png", "RGB"),
        ({"channels": "alpha"}, "image/png", "L"),
    ],
)
def test_format_and_channels(client: httpx.Client, data: dict[str, str], media_type: str, mode: str) -> None:
    response = ok(post(client, data))
    assert response.headers["content-type"] == media_type
    image = decode(response.content)
    assert image.mode == mode and image.size == (340, 220)


def test_zip_holds_color_jpg_and_alpha_png_of_the_result(client: httpx.Client) -> None:
    response = ok(post(client, {"format": "zip"}))
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        colour = decode(archive.read("color.jpg"))
        matte = decode(archive.read("alpha.png"))
    assert colour.format == "JPEG" and colour.mode == "RGB" and colour.size == (340, 220)
    assert matte.format == "PNG" and matte.mode == "L" and matte.size == (340, 220)
    assert np.asarray(matte).min() == 0 and np.asarray(matte).max() == 255
    assert np.asarray(colour)[np.asarray(matte) == 0].mean() < 10, "the removed background is blanked"


@pytest.mark.parametrize(("colour", "rgb"), [("0f0", (0, 255, 0)), ("Navy", (0, 0, 128))])
def test_bg_color_fills_the_background(client: httpx.Client, colour: str, rgb: tuple[int, int, int]) -> None:
    pixels = np.asarray(decode(ok(post(client, {"bg_color": colour, "format": "png"})).content))
    assert tuple(pixels[2, 2]) == rgb


def test_a_translucent_bg_color_keeps_its_alpha(client: httpx.Client) -> None:
    pixels = np.asarray(decode(ok(post(client, {"bg_color": "ff000080"})).content))
    assert tuple(pixels[2, 2]) == (255, 0, 0, 128)


def test_bg_image_file_is_scaled_to_cover_the_canvas(client: httpx.Client) -> None:
    backdrop = Image.new("RGB", (100, 300), (20, 200, 40))  # another aspect: it must cover, not stretch
    response = client.post(
        "/v1.0/removebg",
        files={
            "image_file": ("p.jpg", SMALL, "image/jpeg"),
            "bg_image_file": ("bg.png", to_bytes(backdrop, "PNG"), "image/png"),
        },
    )
    ok(response)
    assert response.headers["content-type"] == "image/jpeg"  # opaque: auto picks JPEG
    pixels = np.asarray(decode(response.content)).astype(int)
    assert pixels.shape == (220, 340, 3)
    assert np.abs(pixels[2, 2] - (20, 200, 40)).max() < 12 and np.abs(pixels[-3, -3] - (20, 200, 40)).max() < 12


def test_crop_cuts_to_the_subject(client: httpx.Client) -> None:
    whole = ok(post(client))
    cropped = ok(post(client, {"crop": "true"}))
    width, height = int(whole.headers["x-foreground-width"]), int(whole.headers["x-foreground-height"])
    assert decode(cropped.content).size == (width, height)
    assert (cropped.headers["x-foreground-left"], cropped.headers["x-foreground-top"]) == ("0", "0")


@pytest.mark.parametrize(
    ("margin", "sides"),  # sides as (top, right, bottom, left), as fractions of the subject or pixels
    [
        ("1px 2px 3px 4px", (1, 2, 3, 4)),
        ("600px", (500, 500, 500, 500)),  # capped at 500 px a side
        ("80%", (0.5, 0.5, 0.5, 0.5)),  # capped at 50 % of the subject
    ],
)
def test_crop_margin_in_pixels_or_percent_capped_as_remove_bg_caps_it(
    client: httpx.Client, margin: str, sides: tuple[float, float, float, float]
) -> None:
    response = ok(post(client, {"crop": "true", "crop_margin": margin, "channels": "alpha"}))
    subject_w, subject_h = int(response.headers["x-foreground-width"]), int(response.headers["x-foreground-height"])
    top, right, bottom, left = (
        round(side * (subject_h if index % 2 == 0 else subject_w)) if isinstance(side, float) else side
        for index, side in enumerate(sides)
    )
    assert decode(response.content).size == (subject_w + left + right, subject_h + top + bottom)
    assert (int(response.headers["x-foreground-left"]), int(response.headers["x-foreground-top"])) == (left, top)


def test_crop_margin_without_crop_changes_nothing(client: httpx.Client) -> None:
    assert decode(ok(post(client, {"crop_margin": "50px"})).content).size == (340, 220)


def subject_box(response: httpx.Response) -> tuple[int, int, int, int]:
    left, top = int(response.headers["x-foreground-left"]), int(response.headers["x-foreground-top"])
    return (
        left,
        top,
        left + int(response.headers["x-foreground-width"]),
        top + int(response.headers["x-foreground-height"]),
    )


@pytest.mark.parametrize("scale", ["50%"])
def test_scale_fits_the_subject_to_a_share_of_the_canvas_and_centres_it(client: httpx.Client, scale: str) -> None:
    fraction = int(scale[:-1]) / 100
    response = ok(post(client, {"scale": scale}))
    left, top, right, bottom = subject_box(response)
    assert decode(response.content).size == (340, 220)
    assert right - left <= round(340 * fraction) + 1 and bottom - top <= round(220 * fraction) + 1
    assert max((right - left) / (340 * fraction), (bottom - top) / (220 * fraction)) > 0.9  # fills one dimension
    assert abs((left + right) / 2 - 170) <= 2 and abs((top + bottom) / 2 - 110) <= 2


@pytest.mark.parametrize(("position", "corner"), [("100% 100%", "bottom-right"), ("100 0", "top-right")])
def test_position_places_the_subject(client: httpx.Client, position: str, corner: str) -> None:
    left, top, right, bottom = subject_box(ok(post(client, {"scale": "40%", "position": position})))
    expected = {"top-left": (left, top), "bottom-right": (340 - right, 220 - bottom), "top-right": (340 - right, top)}[
        corner
    ]
    assert expected == (0, 0)


def test_position_without_scale_moves_the_subject_at_its_size(client: httpx.Client) -> None:
    original = subject_box(ok(post(client, {"position": "original"})))
    moved = subject_box(ok(post(client, {"position": "0% 0%"})))
    assert moved[:2] == (0, 0)
    assert (moved[2], moved[3]) == (original[2] - original[0], original[3] - original[1])


@pytest.mark.parametrize("roi", ["0% 0% 50% 100%", "0 0px 170 100%"])
def test_roi_keeps_only_its_rectangle(client: httpx.Client, roi: str) -> None:
    alpha = alpha_of(ok(post(client, {"roi": roi})))
    assert alpha.shape == (220, 340)
    assert alpha[:, 171:].max() == 0 and alpha[:, :170].max() == 255


def test_roi_in_pixels_refers_to_the_photo_as_sent_even_when_shrunk(client: httpx.Client) -> None:
    alpha = alpha_of(
        ok(post(client, {"roi": "340px 0px 680px 440px"}, image=JPEG))
    )  # the right half of the 680 px photo
    assert alpha.shape == (402, 621)
    assert alpha[:, : 621 // 2 - 1].max() == 0 and alpha[:, 621 // 2 + 1 :].max() == 255


def test_semitransparency_is_accepted(client: httpx.Client) -> None:
    ok(post(client, {"semitransparency": "false", "channels": "alpha"}))  # no effect: see the README


def test_add_shadow_puts_a_soft_shadow_under_the_subject(client: httpx.Client) -> None:
    plain = np.asarray(decode(ok(post(client, {"bg_color": "white", "format": "png"})).content)).astype(int)
    shaded_response = ok(post(client, {"bg_color": "white", "format": "png", "add_shadow": "true"}))
    shaded = np.asarray(decode(shaded_response.content)).astype(int)
    left, top, right, bottom = subject_box(shaded_response)
    below = slice(bottom, min(220, bottom + 5)), slice(left + (right - left) // 4, right - (right - left) // 4)
    if bottom < 220:
        assert shaded[below].mean() < plain[below].mean() - 2
    darker = (plain - shaded).sum(axis=2)
    assert darker.max() > 30 and darker.min() >= -3, "a shadow only darkens"


def test_accept_json_gives_result_b64_and_the_foreground_box(client: httpx.Client) -> None:
    response = ok(post(client, {"crop": "true", "crop_margin": "5px"}, headers={"Accept": "application/json"}))
    assert response.headers["content-type"] == "application/json"
    data = response.json()["data"]
    image = decode(base64.b64decode(data["result_b64"]))
    assert image.format == "PNG" and image.size == (int(response.headers["x-width"]), int(response.headers["x-height"]))
    assert (data["foreground_left"], data["foreground_top"]) == (5, 5)
    assert (data["foreground_width"], data["foreground_height"]) == (image.width - 10, image.height - 10)
    assert data["foreground_type"] == "other"


def test_urlencoded_with_image_file_b64(client: httpx.Client) -> None:
    response = client.post(
        "/v1.0/removebg", data={"image_file_b64": base64.b64encode(SMALL).decode(), "format": "png", "crop": "1"}
    )
    assert decode(ok(response).content).mode == "RGBA"


def test_json_body_with_image_file_b64_and_typed_values(client: httpx.Client) -> None:
    encoded = base64.b64encode(SMALL).decode()
    body = {
        "image_file_b64": "data:image/jpeg;base64," + encoded,
        "crop": True,
        "size": "auto",
        "scale": 50,
        "bg_color": None,
    }
    response = ok(client.post("/v1.0/removebg", json=body))
    assert decode(response.content).size[0] < 340


def test_base64_wrapped_unpadded_or_urlsafe_is_read(client: httpx.Client) -> None:
    encoded = (
        base64.encodebytes(SMALL).decode().rstrip("=\n").replace("+", "-").replace("/", "_")
    )  # MIME-wrapped, URL-safe, unpadded
    ok(client.post("/v1.0/removebg", data={"image_file_b64": encoded, "channels": "alpha"}))


@pytest.mark.parametrize(
    "data",
    [
        {"size": "huge"},
        {"type": "spaceship"},
        {"type_level": "3"},
        {"format": "gif"},
        {"channels": "rgb"},
        {"bg_color": "notacolour"},
        {"bg_color": "12345"},
        {"crop": "maybe"},
        {"crop_margin": "-5px"},
        {"crop_margin": "ten"},
        {"crop_margin": "1px 2px 3px 4px 5px"},
        {"scale": "5%"},
        {"scale": "101%"},
        {"scale": "half"},
        {"position": "150%"},
        {"position": "left"},
        {"position": "1% 2% 3%"},
        {"roi": "1 2 3"},
        {"roi": "-1 0 10 10"},
        {"roi": "50% 0% 40% 100%"},  # empty
        {"add_shadow": "2"},
        {"semitransparency": "sometimes"},
    ],
)
def test_invalid_parameters_are_400_invalid_parameter(client: httpx.Client, data: dict[str, str]) -> None:
    started = time.perf_counter()
    assert_removebg_error(post(client, data), 400, "invalid_parameter")
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": {"size": "preview"}}, 400, "missing_source"),
        ({"files": {"image_file": ("p.jpg", b"", "image/jpeg")}}, 400, "missing_source"),
        (
            {"data": {"image_file_b64": "bm90IGFuIGltYWdl", "image_url": "http://example.com/p.jpg"}},
            400,
            "invalid_parameter",
        ),
        ({"data": {"image_file_b64": "!!!not base64!!!"}}, 400, "invalid_parameter"),
        ({"data": {"image_url": "http://example.com/p.jpg"}}, 400, "image_url_refused"),  # off unless IMAGE_URL_ALLOW
        (
            {"data": {"image_file_b64": base64.b64encode(SMALL).decode(), "bg_image_url": "http://example.com/bg.jpg"}},
            400,
            "image_url_refused",
        ),
        (
            {"data": {"image_file_b64": base64.b64encode(np.random.default_rng(1).bytes(5000)).decode()}},
            400,
            "unsupported_format",
        ),
        ({"files": {"image_file": ("p.jpg", JPEG[: len(JPEG) // 3])}}, 400, "unreadable_image"),
        (
            {"files": {"image_file": ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")}},
            400,
            "unsupported_format",
        ),
        ({"files": {"image_file": ("p.png", png_with_declared_size(9000, 9000))}}, 413, "image_too_large"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 400, "unsupported_media_type"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "bad_request"),
        ({"json": ["image_file_b64"]}, 400, "bad_request"),
        ({"json": {"image_file_b64": {"nested": 1}}}, 400, "invalid_parameter"),
        ({"data": {"image_file": "raw bytes in a urlencoded body"}}, 400, "invalid_parameter"),
        (
            {"content": b"--xyz\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
            400,
            "missing_source",
        ),
    ],
    ids=[
        "no-image",
        "empty-file",
        "two-sources",
        "bad-base64",
        "image-url-off",
        "bg-image-url-off",
        "random-bytes",
        "truncated",
        "svg",
        "over-pixel-limit",
        "text-body",
        "bad-json",
        "json-array",
        "json-nested",
        "urlencoded-file",
        "bad-multipart",
    ],
)
def test_every_bad_request_is_a_remove_bg_error(
    client: httpx.Client, kwargs: dict[str, object], status: int, code: str
) -> None:
    assert_removebg_error(client.post("/v1.0/removebg", **kwargs), status, code)  # type: ignore[arg-type]


def test_two_backgrounds_are_refused(client: httpx.Client) -> None:
    files = {"image_file": ("p.jpg", SMALL), "bg_image_file": ("b.jpg", SMALL)}
    assert_removebg_error(
        client.post("/v1.0/removebg", files=files, data={"bg_color": "red"}), 400, "invalid_parameter"
    )


def test_a_picture_without_a_subject_is_unknown_foreground(client: httpx.Client) -> None:
    blank = to_bytes(Image.new("RGB", (200, 150), (128, 128, 128)), "PNG")
    assert_removebg_error(post(client, image=blank), 400, "unknown_foreground")


def test_oversize_uploads_are_413_declared_or_streamed(client: httpx.Client) -> None:
    too_big = b"\xff\xd8\xff" + bytes(31 * 1024 * 1024)
    assert_removebg_error(post(client, image=too_big), 413, "file_too_large")
    encoded = base64.b64encode(too_big)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield b'{"image_file_b64": "'
        for start in range(0, len(encoded), 1 << 20):
            yield encoded[start : start + (1 << 20)]
        yield b'"}'

    response = client.post("/v1.0/removebg", content=chunks(), headers={"content-type": "application/json"})
    assert_removebg_error(response, 413, "file_too_large")
    assert client.get("/healthz").status_code == 200


def test_account_reports_an_unmetered_balance(client: httpx.Client) -> None:
    response = client.get("/v1.0/account")
    assert response.status_code == 200
    attributes = response.json()["data"]["attributes"]
    assert attributes["credits"]["total"] > 0 and set(attributes["credits"]) == {
        "total",
        "subscription",
        "payg",
        "enterprise",
    }
    assert attributes["api"] == {"free_calls": attributes["api"]["free_calls"], "sizes": "all"}


def test_the_plain_api_is_unchanged_beside_it(client: httpx.Client) -> None:
    response = client.post("/remove", files={"file": ("p.jpg", SMALL)})
    assert response.status_code == 200 and "x-ratelimit-limit" not in response.headers
    assert client.post("/remove?format=gif", content=SMALL).json()["error"]["code"] == "invalid_option"
