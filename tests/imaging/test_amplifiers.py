"""Issue 21's decode and encode amplifiers: each hostile file is refused with its own 4xx code before the costly
work, or its metadata dropped, and the real photos on either side of every cap still decode."""

from __future__ import annotations

from io import BytesIO

import httpx
import numpy as np
import pytest
from PIL import Image

from app.errors import ApiError
from app.imaging import bounds
from app.imaging.decode import decode_image
from app.imaging.encode import encode_jpeg
from tests.images import photo, photo_bytes, to_bytes
from tests.imaging import hostile

LIMIT = 60_000_000


def _refusal(data: bytes) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        decode_image(data, LIMIT)
    return caught.value.status, caught.value.code


def _scans(data: bytes) -> int:
    return data.count(b"\xff\xda")  # a flat picture's entropy-coded data holds no FF DA by chance


def test_a_progressive_jpeg_past_the_scan_cap_is_refused_and_one_at_it_decodes() -> None:
    # 4096x4096 with 5,000 scans took 20.6 s to decode; the walk refuses it without decoding a block
    assert _refusal(hostile.progressive_jpeg_with_scans(4096, 5000)) == (422, "too_many_scans")
    over = hostile.progressive_jpeg_with_scans(64, bounds.JPEG_MAX_SCANS + 1)
    assert _scans(over) == bounds.JPEG_MAX_SCANS + 1
    assert _refusal(over) == (422, "too_many_scans")
    at_cap = hostile.progressive_jpeg_with_scans(64, bounds.JPEG_MAX_SCANS)
    assert decode_image(at_cap, LIMIT).rgb.shape == (64, 64, 3)


def test_a_real_progressive_photo_decodes() -> None:
    data = to_bytes(photo(), "JPEG", progressive=True, quality=90)
    assert 1 < _scans(data) <= bounds.JPEG_MAX_SCANS
    assert decode_image(data, LIMIT).rgb.shape == (440, 680, 3)


@pytest.mark.parametrize(
    "data",
    [
        hostile.jpeg_with_comments(5_000_000),  # 20 MB: 4-21 s and +370 MB in Pillow's marker loop
        hostile.jpeg_with_comments(bounds.JPEG_MAX_MARKERS + 1),
        b"\xff\xd8" + b"\xff" * 1_000_000 + photo_bytes()[2:],  # fill bytes, walked one by one
        b"\xff\xd8" + b"\xff\xd0" * 1_000_000 + photo_bytes()[2:],  # restarts outside any scan
    ],
    ids=["5M-comments", "one-too-many", "fill-bytes", "stray-restarts"],
)
def test_floods_of_jpeg_markers_are_refused(data: bytes) -> None:
    assert _refusal(data) == (422, "too_many_segments")


def test_jpeg_markers_within_the_cap_decode() -> None:
    assert decode_image(hostile.jpeg_with_comments(bounds.JPEG_MAX_MARKERS // 2), LIMIT).rgb.shape == (48, 64, 3)


def test_restarts_and_stuffing_inside_scans_are_not_markers() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (720, 960, 3), dtype=np.uint8)  # entropy data full of FF 00
    data = to_bytes(Image.fromarray(noise), "JPEG", quality=95, restart_marker_blocks=1)  # an RST every block
    restarts = sum(data.count(bytes((0xFF, 0xD0 + number))) for number in range(8))
    assert data.count(b"\xff\x00") > bounds.JPEG_MAX_MARKERS and restarts > bounds.JPEG_MAX_MARKERS
    assert decode_image(data, LIMIT).rgb.shape == (720, 960, 3)


def test_too_much_jpeg_metadata_is_refused() -> None:
    count = bounds.MAX_METADATA_BYTES // 65_537 + 1
    assert _refusal(hostile.jpeg_with_app_segments(count)) == (413, "too_much_metadata")
    assert decode_image(hostile.jpeg_with_app_segments(count - 2), LIMIT).rgb.shape == (24, 32, 3)


def test_a_tiff_tile_far_larger_than_its_image_is_refused_before_it_is_inflated() -> None:
    # 16x16 in one 16384x16384 tile: 783 KB, +770 MB and 8.7 s to inflate; here 4096 (48 MB inflated)
    assert _refusal(hostile.tiff_with_huge_tile(16, 4096)) == (422, "implausible_tiff")
    small_tiles = decode_image(hostile.tiff_with_huge_tile(16, 256), LIMIT)  # ordinary tiles on an icon
    assert small_tiles.rgb.shape == (16, 16, 3)


def test_tiff_byte_counts_beyond_the_file_are_refused() -> None:
    assert _refusal(hostile.tiff_with_huge_tile(16, 256, claimed_bytes=2_000_000_000)) == (422, "implausible_tiff")


def test_a_tiled_photo_decodes() -> None:
    data = to_bytes(photo(), "TIFF", compression="tiff_adobe_deflate", tile=(256, 256))
    assert decode_image(data, LIMIT).rgb.shape == (440, 680, 3)


def test_a_multi_page_tiff_decodes_its_first_page_only() -> None:
    first, second = Image.new("RGB", (40, 30), (0, 0, 200)), Image.new("RGB", (40, 30), (200, 0, 0))
    data = to_bytes(first, "TIFF", save_all=True, append_images=[second] * 50)
    assert decode_image(data, LIMIT).rgb[0, 0].tolist() == [0, 0, 200]


@pytest.mark.parametrize(("width", "height"), [(1, 60_000_000), (1, bounds.MAX_SIDE + 1), (bounds.MAX_SIDE + 1, 1)])
def test_a_side_over_the_cap_is_refused_from_the_header(width: int, height: int) -> None:
    # 1x60,000,000 is within MAX_PIXELS: 117 KB that took 23 s and +1.2 GB
    assert _refusal(hostile.png(width, height)) == (413, "side_too_long")


def test_a_thin_image_within_the_cap_decodes() -> None:
    assert decode_image(hostile.png(1, bounds.MAX_SIDE), LIMIT).rgb.shape == (bounds.MAX_SIDE, 1, 3)


@pytest.mark.parametrize(
    "data",
    [
        hostile.png_with_chunks(bounds.PNG_MAX_CHUNKS + 1, b"abCD"),  # unknown ancillary chunks
        hostile.png_with_chunks(bounds.PNG_MAX_TEXT_CHUNKS + 1),  # tEXt
        hostile.png_with_chunks(bounds.PNG_MAX_CHUNKS + 1, b"fdAT"),  # animation frames
    ],
    ids=["ancillary", "text", "frame-data"],
)
def test_floods_of_png_chunks_are_refused(data: bytes) -> None:
    assert _refusal(data) == (422, "too_many_segments")


def test_too_much_png_metadata_is_refused() -> None:
    chunk = b"a\x00" + b"b" * 1_000_000
    data = hostile.png_with_chunks(bounds.MAX_METADATA_BYTES // len(chunk) + 1, body=chunk)
    assert _refusal(data) == (413, "too_much_metadata")


def test_png_chunks_within_the_caps_decode() -> None:
    assert decode_image(hostile.png_with_chunks(bounds.PNG_MAX_TEXT_CHUNKS), LIMIT).rgb.shape == (16, 16, 3)
    assert decode_image(hostile.png(300, 200, idat_size=16), LIMIT).rgb.shape == (200, 300, 3)


@pytest.mark.parametrize(
    ("profile", "kept"),
    [
        (hostile.icc_profile(3_000), True),
        (hostile.icc_profile(bounds.MAX_ICC_BYTES), True),
        (hostile.icc_profile(bounds.MAX_ICC_BYTES + 1), False),
        (hostile.icc_profile(10_000_000), False),
        (hostile.icc_profile(3_000, valid=False), False),  # no 'acsp' signature
        (hostile.icc_profile(3_000)[:-1], False),  # its size field says one byte more
    ],
    ids=["small", "at-cap", "over-cap", "10MB", "not-a-profile", "size-mismatch"],
)
def test_icc_profiles_are_kept_only_when_valid_and_within_the_cap(profile: bytes, kept: bool) -> None:
    image = decode_image(hostile.jpeg_with_icc(profile), LIMIT)
    assert image.icc_profile == (profile if kept else None)
    assert image.dropped_metadata == (() if kept else ("icc",))


def test_a_jpeg_gets_no_profile_it_cannot_number() -> None:
    pixels = np.full((24, 32, 3), 128, np.uint8)
    jpeg = encode_jpeg(pixels, 90, hostile.icc_profile(17_000_000))  # 260 segments: was a ValueError, a 500
    assert b"ICC_PROFILE" not in jpeg
    assert Image.open(BytesIO(jpeg)).size == (32, 24)


# Through the real app: the refusals are JSON 4xx, the dropped profile is said, and the next image is served.


def _served_normally(client: httpx.Client) -> None:
    response = client.post("/remove", content=to_bytes(photo().resize((68, 44)), "JPEG"))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("data", "query", "status", "code"),
    [
        (hostile.progressive_jpeg_with_scans(4096, 5000), "", 422, "too_many_scans"),
        (hostile.jpeg_with_comments(2_000_000), "", 422, "too_many_segments"),
        (hostile.tiff_with_huge_tile(16, 16384), "", 422, "implausible_tiff"),
        (hostile.png(1, 60_000_000), "", 413, "side_too_long"),
        (hostile.png(16384, 2), "?format=webp", 422, "output_too_large_for_format"),
    ],
    ids=["scans", "comments", "tiff-tile", "1x60M", "webp-wide"],
)
def test_the_service_refuses_amplifiers_with_their_codes(
    client: httpx.Client, data: bytes, query: str, status: int, code: str
) -> None:
    response = client.post("/remove" + query, content=data, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    _served_normally(client)


def test_the_service_drops_a_10mb_profile_and_says_so(client: httpx.Client) -> None:
    # a 32x24 JPEG with a 10 MB "ICC profile" was copied verbatim into a 10.5 MB PNG
    response = client.post("/remove", content=hostile.jpeg_with_icc(hostile.icc_profile(10_000_000)))
    assert response.status_code == 200
    assert response.headers["x-dropped-metadata"] == "icc"
    assert len(response.content) < 100_000 and "icc_profile" not in Image.open(BytesIO(response.content)).info


def test_the_service_keeps_a_real_profile_and_says_nothing(client: httpx.Client) -> None:
    profile = hostile.icc_profile(3_000)
    response = client.post("/remove?format=webp", content=hostile.jpeg_with_icc(profile))
    assert response.status_code == 200 and "x-dropped-metadata" not in response.headers
    assert Image.open(BytesIO(response.content)).info["icc_profile"] == profile


def test_a_17mb_profile_into_jpeg_output_is_dropped_not_a_500(client: httpx.Client) -> None:
    response = client.post("/remove?format=jpeg", content=hostile.webp_with_icc(hostile.icc_profile(17_000_000)))
    assert response.status_code == 200 and response.headers["x-dropped-metadata"] == "icc"
    assert b"ICC_PROFILE" not in response.content


def test_the_removebg_api_says_so_too(client: httpx.Client) -> None:
    lemur = photo().resize((340, 220))  # a subject that stands out: remove.bg's API refuses a flat frame
    with_profile = to_bytes(lemur, "JPEG", quality=90, icc_profile=hostile.icc_profile(10_000_000))
    response = client.post("/v1.0/removebg", files={"image_file": ("a.jpg", with_profile)}, data={"size": "full"})
    assert response.status_code == 200 and response.headers["x-dropped-metadata"] == "icc"
