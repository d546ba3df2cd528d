from __future__ import annotations

import numpy as np
import pytest

from app.errors import ApiError
from app.imaging.encode import Cutout, EncoderSettings, encode, encode_jpeg, encode_webp, foreground_box
from tests.images import decode, photo

RED = (200, 30, 40)
WHITE_BG = (255, 255, 255, 255)


def _subject() -> tuple[np.ndarray, np.ndarray]:
    """A red square, half-transparent edge columns, on a (to be removed) green background."""
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[:] = (0, 255, 0)
    rgb[10:30, 20:40] = RED
    alpha = np.zeros((40, 60), dtype=np.uint8)
    alpha[10:30, 20:40] = 255
    alpha[10:30, 20] = 128
    return rgb, alpha


def test_transparent_output_keeps_straight_colours_and_blanks_the_background() -> None:
    rgb, alpha = _subject()
    out = Cutout(rgb, alpha, None).pixels()
    assert out.shape == (40, 60, 4)
    assert tuple(out[20, 20]) == (*RED, 128), "a semi-transparent pixel must keep its own colour"
    assert tuple(out[0, 0]) == (0, 0, 0, 0), "the removed background must not survive in RGB"
    assert tuple(out[15, 30]) == (*RED, 255)


def test_opaque_background_is_composited() -> None:
    rgb, alpha = _subject()
    out = Cutout(rgb, alpha, (0, 0, 255, 255)).pixels()
    assert out.shape == (40, 60, 3)
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert tuple(out[15, 30]) == RED
    expected = np.round((np.array(RED) * 128 + np.array([0, 0, 255]) * 127) / 255)
    assert np.abs(out[20, 20].astype(int) - expected).max() <= 1


def test_translucent_background_is_porter_duff_over() -> None:
    rgb, alpha = _subject()
    out = Cutout(rgb, alpha, (0, 0, 255, 128)).pixels()
    assert out.shape == (40, 60, 4)
    assert tuple(out[0, 0]) == (0, 0, 255, 128)
    assert tuple(out[15, 30]) == (*RED, 255)
    edge = out[20, 20]
    assert 190 <= edge[3] <= 192  # 128 + 128 * 127 / 255


def test_foreground_box() -> None:
    _, alpha = _subject()
    assert foreground_box(alpha) == (20, 10, 40, 30)
    assert foreground_box(np.zeros((5, 5), dtype=np.uint8)) is None


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_encode_formats_round_trip(fmt: str) -> None:
    rgb, alpha = _subject()
    cutout = Cutout(rgb, alpha, None if fmt != "jpeg" else (255, 255, 255, 255))
    image = decode(encode(cutout, fmt, EncoderSettings()))  # type: ignore[arg-type]
    assert image.format == {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt]
    assert image.size == (60, 40)
    assert image.mode == ("RGB" if fmt == "jpeg" else "RGBA")


def test_mask_encodes_as_grayscale() -> None:
    rgb, alpha = _subject()
    image = decode(encode(Cutout(rgb, alpha, mask_only=True), "png", EncoderSettings()))
    assert image.mode == "L"
    assert np.array_equal(np.asarray(image), alpha)


def test_webp_size_limit_is_a_clear_error() -> None:
    wide = Cutout(np.zeros((1, 17000, 3), dtype=np.uint8), np.zeros((1, 17000), dtype=np.uint8))
    with pytest.raises(ApiError) as caught:
        encode(wide, "webp", EncoderSettings())
    assert caught.value.status == 422


@pytest.mark.parametrize("background", [None, (0, 0, 255, 255), (0, 0, 255, 128)])
def test_compose_takes_crops_and_tiny_shapes(background: tuple[int, int, int, int] | None) -> None:
    rgb, alpha = _subject()
    for rows, cols in [(slice(10, 30), slice(20, 40)), (slice(0, 1), slice(0, 1)), (slice(5, 6), slice(0, 60))]:
        view_rgb, view_alpha = rgb[rows, cols], alpha[rows, cols]  # views, not contiguous
        out = Cutout(view_rgb, view_alpha, background).pixels()
        assert out.shape[:2] == view_alpha.shape
        assert np.array_equal(Cutout(view_rgb.copy(), view_alpha.copy(), background).pixels(), out)
        png = encode(Cutout(view_rgb, view_alpha, background), "png", EncoderSettings(threads=2))
        assert np.array_equal(np.asarray(decode(png)), out)


def test_jpeg_keeps_its_colours_and_matches_pillows_at_the_same_quality() -> None:
    """OpenCV writes it (it lets go of the GIL); it must read back as Pillow's own would, not as BGR."""
    from io import BytesIO

    from PIL import Image

    pixels = np.asarray(photo())
    ours = decode(encode_jpeg(pixels.copy(), 90))  # its channels are swapped in place
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    pillows = decode(buffer.getvalue())
    assert ours.mode == "RGB"
    difference = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(pillows, dtype=np.int16))
    assert difference.mean() < 1.0
    assert abs(len(encode_jpeg(pixels.copy(), 90)) / len(buffer.getvalue()) - 1) < 0.1
    red = decode(encode_jpeg(np.full((16, 16, 3), RED, dtype=np.uint8), 90))
    assert np.abs(np.asarray(red, dtype=np.int16) - np.array(RED)).max() <= 2


def test_jpeg_mask_is_grayscale() -> None:
    rgb, alpha = _subject()
    image = decode(encode(Cutout(rgb, alpha, mask_only=True), "jpeg", EncoderSettings()))
    assert image.mode == "L"
    assert np.abs(np.asarray(image, dtype=np.int16) - alpha).mean() < 4


@pytest.mark.parametrize("profile_size", [3_000, 150_000])  # one APP2 segment, then three
def test_jpeg_carries_the_icc_profile_after_the_jfif_header(profile_size: int) -> None:
    profile = np.random.default_rng(profile_size).bytes(profile_size)  # readers join the segments unread
    rgb, alpha = _subject()
    jpeg = encode(Cutout(rgb, alpha, WHITE_BG), "jpeg", EncoderSettings(), icc_profile=profile)
    assert jpeg[2:4] == b"\xff\xe0" and jpeg[6:11] == b"JFIF\x00"
    image = decode(jpeg)
    assert image.info["icc_profile"] == profile
    assert image.size == (60, 40)


def test_webp_keeps_its_colours_and_alpha_as_pillows_does() -> None:
    from io import BytesIO

    from PIL import Image

    rgb = np.asarray(photo())
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    alpha[20:-20, 30:-30] = 255
    alpha[20:-20, 30] = 100
    rgba = np.dstack([rgb, alpha])
    ours = np.asarray(decode(encode_webp(rgba.copy(), 90)), dtype=np.int16)  # its channels are swapped in place
    buffer = BytesIO()
    Image.fromarray(rgba).save(buffer, "WEBP", quality=90, method=4)
    pillows = np.asarray(decode(buffer.getvalue()), dtype=np.int16)
    assert np.array_equal(ours[..., 3], alpha)  # alpha is kept losslessly
    visible = alpha > 0
    assert np.abs(ours[..., :3] - pillows[..., :3])[visible].mean() < 1.0
    assert abs(len(encode_webp(rgba.copy(), 90)) / len(buffer.getvalue()) - 1) < 0.1


@pytest.mark.parametrize("background", [None, WHITE_BG])  # with alpha: VP8X already; opaque: a simple file
@pytest.mark.parametrize("profile_size", [3_001, 150_000])  # odd: the chunk gets a pad byte
def test_webp_carries_the_icc_profile(background: tuple[int, int, int, int] | None, profile_size: int) -> None:
    profile = np.random.default_rng(profile_size).bytes(profile_size)
    rgb, alpha = _subject()
    webp = encode(Cutout(rgb, alpha, background), "webp", EncoderSettings(), icc_profile=profile)
    assert int.from_bytes(webp[4:8], "little") == len(webp) - 8
    image = decode(webp)
    assert image.info["icc_profile"] == profile
    assert image.size == (60, 40)
    assert image.mode == ("RGBA" if background is None else "RGB")
    pixels = np.asarray(image, dtype=np.int16)
    assert np.abs(pixels[20, 30, :3] - np.array(RED)).max() < 12  # the subject's colour, not BGR


def test_a_lossless_webp_keeps_its_alpha_flag_when_it_gets_a_profile() -> None:
    """Above quality 100 OpenCV writes a simple lossless file (VP8L); the VP8X header made for the
    profile must say it has alpha (libwebp reads it from the bitstream anyway, stricter readers may not)."""
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[10:30, 20:40] = (*RED, 255)
    plain = encode_webp(rgba.copy(), 101)
    assert plain[12:16] == b"VP8L"
    webp = encode_webp(rgba.copy(), 101, icc_profile=b"profile" * 43)
    assert webp[12:16] == b"VP8X" and webp[20] & 0x10  # the header's alpha flag, as the spec asks
    image = decode(webp)
    assert image.mode == "RGBA"
    assert image.info["icc_profile"] == b"profile" * 43
    assert np.array_equal(np.asarray(image), rgba)
