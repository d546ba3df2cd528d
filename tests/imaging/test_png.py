from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from app.imaging.png import adler32_combine, encode_png
from tests.images import decode, photo


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("level", [0, 1, 2])  # ISA-L's levels, then zlib's
def test_round_trips_exactly(channels: int, threads: int, level: int) -> None:
    rgb = np.asarray(photo())
    pixels = {1: rgb[..., 0], 3: rgb, 4: np.dstack([rgb, rgb[..., 1]])}[channels]
    pixels = np.ascontiguousarray(np.tile(pixels, (12, 4) + (1,) * (pixels.ndim - 2)))  # 5280 x 2720: many bands
    image = decode(encode_png(pixels, level=level, threads=threads))
    assert image.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    assert np.array_equal(np.asarray(image), pixels)


def test_tiny_and_odd_shapes() -> None:
    for shape in [(1, 1, 4), (1, 7, 3), (9, 1), (3, 5, 4)]:
        pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(np.asarray(decode(encode_png(pixels))), pixels)


def test_icc_profile_is_embedded() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = decode(encode_png(np.zeros((4, 4, 3), dtype=np.uint8), icc_profile=profile))
    assert image.info["icc_profile"] == profile


def test_smaller_than_pillow_at_the_same_level() -> None:
    pixels = np.asarray(photo())
    ours = encode_png(pixels, level=1)
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    assert len(ours) <= len(buffer.getvalue()) * 1.05


def test_higher_levels_trade_time_for_size() -> None:
    """Level 1 is ISA-L's, 6 zlib's: the setting must still buy smaller files."""
    pixels = np.asarray(photo())
    assert len(encode_png(pixels, level=6)) < len(encode_png(pixels, level=1))


def test_adler32_combine_matches_zlib() -> None:
    rng = np.random.default_rng(1)
    for first_size, second_size in [(0, 0), (1, 0), (0, 5), (1000, 777), (70_000, 130_000)]:
        first, second = rng.bytes(first_size), rng.bytes(second_size)
        combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)


def test_every_chunk_carries_its_own_length_and_crc() -> None:
    """Decoders skip the IDAT CRC, so check it here: the CRC is run over the body's pieces in turn."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = np.ascontiguousarray(np.tile(np.asarray(photo()), (8, 2, 1)))  # several bands, so several pieces
    png = encode_png(pixels, threads=2, icc_profile=profile)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, offset = [], 8
    while offset < len(png):
        length, kind = int.from_bytes(png[offset : offset + 4], "big"), png[offset + 4 : offset + 8]
        body = png[offset + 8 : offset + 8 + length]
        assert len(body) == length
        assert int.from_bytes(png[offset + 8 + length : offset + 12 + length], "big") == zlib.crc32(kind + body)
        kinds.append(kind)
        offset += 12 + length
    assert kinds == [b"IHDR", b"iCCP", b"IDAT", b"IEND"]
