"""Byte mutations of real images into the decoder: an image or a 4xx ``ApiError``, never anything else.

Bounded: a fixed number of Hypothesis examples, each with a deadline, so a
mutation that makes the decoder hang or crawl fails the test instead of CI.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ApiError
from app.imaging.decode import decode_image
from tests.images import heif_bytes, photo, to_bytes

_SMALL = photo().resize((96, 62))
SEEDS = {
    "jpeg": to_bytes(_SMALL, "JPEG", quality=85),
    "progressive-jpeg": to_bytes(_SMALL, "JPEG", quality=85, progressive=True),
    "png": to_bytes(_SMALL.convert("RGBA"), "PNG"),
    "webp": to_bytes(_SMALL, "WEBP", quality=80),
    "gif": to_bytes(_SMALL.convert("P"), "GIF"),
    "tiff": to_bytes(_SMALL, "TIFF"),
    "bmp": to_bytes(_SMALL, "BMP"),
    "heic": heif_bytes(_SMALL, orientation=6, quality=80),
}
MAX_PIXELS = 4_000_000


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with a few of the damages files suffer: flipped bytes, cuts, splices, repeats."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "repeat", "header"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
        elif kind == "header":  # the first bytes hold the sizes and markers decoders trust most
            data[min(at, 64) : min(at, 64) + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


@settings(
    max_examples=1000,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure in CI is a failure here
)
@given(data=mutated_images())
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt metadata; the outcome is asserted
def test_damaged_images_decode_or_fail_with_a_client_error(data: bytes) -> None:
    try:
        image = decode_image(data, MAX_PIXELS)
    except ApiError as error:
        assert 400 <= error.status < 500, error
        return
    assert image.rgb.ndim == 3 and image.rgb.shape[2] == 3 and image.rgb.size > 0
    assert image.width * image.height <= MAX_PIXELS
