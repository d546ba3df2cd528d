from __future__ import annotations

import time
from io import BytesIO

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.errors import ApiError
from app.imaging.decode import decode_image, sniff_format
from tests.images import exif_rotated_jpeg, photo, photo_bytes, png_with_declared_size, to_bytes, tricky_inputs

LIMIT = 60_000_000


@pytest.mark.parametrize("name", sorted(tricky_inputs()))
def test_every_mode_decodes_to_oriented_uint8_rgb(name: str) -> None:
    data, (width, height) = tricky_inputs()[name]
    image = decode_image(data, LIMIT)
    assert image.rgb.shape == (height, width, 3)
    assert image.rgb.dtype == np.uint8
    assert image.rgb.flags.c_contiguous
    assert image.rgb.std() > 10, "decoded to a flat image: the mode was mishandled"


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    image = decode_image(to_bytes(Image.fromarray(ramp), "PNG"), LIMIT)
    assert image.rgb[..., 0].ravel().tolist() == list(range(256))


def test_existing_alpha_is_kept_and_opaque_alpha_dropped() -> None:
    data, _ = tricky_inputs()["rgba_png"]
    alpha = decode_image(data, LIMIT).alpha
    assert alpha is not None and alpha[:, :10].max() == 0 and alpha[:, -10:].min() == 255
    opaque = photo().convert("RGBA")
    assert decode_image(to_bytes(opaque, "PNG"), LIMIT).alpha is None


def test_palette_transparency_becomes_alpha() -> None:
    data, _ = tricky_inputs()["palette_transparency_png"]
    assert decode_image(data, LIMIT).alpha is not None


def test_animated_image_uses_first_frame() -> None:
    data, _ = tricky_inputs()["animated_gif"]
    rgb = decode_image(data, LIMIT).rgb
    assert not (rgb[..., 0] > 200).all(), "got the red second frame"


def test_exif_orientation_is_applied() -> None:
    upright = decode_image(photo_bytes(), LIMIT).rgb
    rotated = decode_image(exif_rotated_jpeg(6), LIMIT).rgb
    assert rotated.shape == (upright.shape[1], upright.shape[0], 3)
    # orientation 6 means "rotate 90 degrees clockwise to display"
    expected = np.rot90(upright, k=-1)
    assert np.abs(rotated.astype(int) - expected.astype(int)).mean() < 8


def test_broken_exif_is_ignored() -> None:
    data = bytearray(exif_rotated_jpeg(6))
    at = data.find(b"Exif\x00\x00")
    data[at + 6 : at + 14] = b"XX\x00\x00\x00\x00\x00\x00"  # destroy the TIFF header inside EXIF
    assert decode_image(bytes(data), LIMIT).rgb.size > 0


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_input"),
        (np.random.default_rng(0).bytes(4096), 415, "unsupported_format"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415, "unsupported_format"),
        (b"  <svg width='10' height='10'></svg>", 415, "unsupported_format"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64, 415, "unsupported_format"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, 422, "unreadable_image"),
        (photo_bytes()[: len(photo_bytes()) // 2], 422, "unreadable_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, "unreadable_image"),
        (png_with_declared_size(9000, 9000), 413, "image_too_large"),
        (png_with_declared_size(100_000, 100_000), 413, "image_too_large"),
    ],
    ids=["empty", "random", "svg-xml", "svg-bare", "mp4", "heic-without-boxes", "truncated-jpeg", "broken-png", "over-limit", "bomb"],
)
def test_bad_input_is_a_clear_client_error(data: bytes, status: int, code: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ApiError) as caught:
        decode_image(data, LIMIT)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert time.perf_counter() - started < 1.0


def test_format_is_sniffed_from_bytes() -> None:
    base = photo().resize((64, 40))
    assert sniff_format(to_bytes(base, "PNG")) == "PNG"
    assert sniff_format(to_bytes(base, "JPEG")) == "JPEG"
    assert sniff_format(to_bytes(base, "WEBP")) == "WEBP"
    assert sniff_format(to_bytes(base, "GIF")) == "GIF"
    assert sniff_format(to_bytes(base, "TIFF")) == "TIFF"
    assert sniff_format(to_bytes(base, "BMP")) == "BMP"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_fast_path_orients_like_pillow(orientation: int) -> None:
    data = exif_rotated_jpeg(orientation)
    reference = Image.open(BytesIO(data))
    reference = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
    decoded = decode_image(data, LIMIT).rgb
    assert decoded.shape == reference.shape
    assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 1.5  # IDCT rounding differs slightly


def test_truncated_jpeg_is_refused_not_grey_filled() -> None:
    data = photo_bytes()
    for cut in (len(data) // 4, len(data) - 100, len(data) - 2):
        with pytest.raises(ApiError) as caught:
            decode_image(data[:cut], LIMIT)
        assert caught.value.code == "unreadable_image"


def test_trailing_bytes_after_a_jpeg_are_harmless() -> None:
    assert decode_image(photo_bytes() + b"\x00trailer\xff\xda junk", LIMIT).rgb.shape == (440, 680, 3)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "LA", "PA", "RGBa", "La"])
@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "WEBP"])
def test_any_mode_in_any_container_decodes_or_is_a_4xx(mode: str, fmt: str) -> None:
    try:
        data = to_bytes(photo().resize((40, 30)).convert("RGBA").convert(mode) if mode not in ("I;16", "HSV") else Image.new(mode, (40, 30)), fmt)
    except (OSError, ValueError, KeyError):
        pytest.skip(f"Pillow cannot write {mode} as {fmt}")
    try:
        image = decode_image(data, LIMIT)
    except ApiError as error:
        assert 400 <= error.status < 500
    else:
        assert image.rgb.shape == (30, 40, 3)
