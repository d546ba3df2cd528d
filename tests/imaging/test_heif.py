"""HEIC/HEIF through libheif: made here with libheif's own encoder, then decoded as an upload is."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from io import BytesIO

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms, ImageOps

from app.errors import ApiError
from app.imaging.decode import SUPPORTED_FORMATS, decode_image, sniff_format
from tests.images import REPO, heif_bytes, photo, to_bytes

LIMIT = 60_000_000
SMALL = photo().resize((340, 220))


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"


def test_heic_decodes_to_its_size_and_colours() -> None:
    source = photo()
    image = decode_image(heif_bytes(source), LIMIT)
    assert image.source_format == "HEIF"
    assert image.rgb.shape == (440, 680, 3) and image.rgb.dtype == np.uint8
    assert image.rgb.flags.c_contiguous and image.rgb.flags.writeable
    assert image.alpha is None
    assert _mean_diff(image.rgb, np.asarray(source)) < 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"heix", b"mif1"), "HEIF"),
        (_ftyp(b"hevc", b"msf1"), "HEIF"),
        (_ftyp(b"hevx", b"msf1"), "HEIF"),
        (_ftyp(b"heim", b"mif1"), "HEIF"),
        (_ftyp(b"heis", b"mif1"), "HEIF"),
        (_ftyp(b"mif1", b"MiHE", b"miaf", b"heic"), "HEIF"),  # the major brand Apple's encoder sometimes writes
        (_ftyp(b"msf1", b"hevc"), "HEIF"),
        (_ftyp(b"mif1"), "HEIF"),  # codec-neutral: libheif decides
        (_ftyp(b"avif", b"mif1", b"miaf"), "AVIF"),
        (_ftyp(b"mif1", b"avif", b"miaf"), "AVIF"),
    ],
)
def test_heif_and_avif_are_told_apart_by_their_brands(header: bytes, expected: str) -> None:
    if expected not in SUPPORTED_FORMATS:
        pytest.skip(f"this Pillow has no {expected} reader")
    assert sniff_format(header) == expected


@pytest.mark.parametrize("major", [b"isom", b"mp42", b"qt  ", b"crx ", b"M4A "])
def test_other_iso_media_is_still_415(major: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        decode_image(_ftyp(major, b"isom", b"mp41") + bytes(64), LIMIT)
    assert (caught.value.status, caught.value.code) == (415, "unsupported_format")


def test_real_files_are_sniffed_as_what_they_are() -> None:
    assert sniff_format(heif_bytes(SMALL)) == "HEIF"
    if "AVIF" in SUPPORTED_FORMATS:
        avif = to_bytes(SMALL, "AVIF", quality=80)
        assert sniff_format(avif) == "AVIF"
        assert decode_image(avif, LIMIT).rgb.shape == (220, 340, 3)  # still Pillow's, not libheif's


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_comes_out_upright_and_only_once(orientation: int) -> None:
    data = heif_bytes(SMALL, orientation, quality=95)
    stored = pillow_heif.open_heif(data)
    exif = Image.Exif()
    exif.load(stored.info.get("exif") or b"")
    assert exif.get(0x0112, 1) == orientation, "the file should carry the EXIF tag as well as irot/imir"
    tagged = SMALL.copy()
    tagged.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(tagged))  # what a viewer shows
    decoded = decode_image(data, LIMIT).rgb
    assert decoded.shape == expected.shape
    assert _mean_diff(decoded, expected) < 3


def test_alpha_plane_is_kept_and_opaque_alpha_dropped() -> None:
    half = Image.new("L", SMALL.size, 255)
    half.paste(0, (0, 0, SMALL.width // 2, SMALL.height))
    rgba = SMALL.convert("RGBA")
    rgba.putalpha(half)
    image = decode_image(heif_bytes(rgba, quality=95), LIMIT)
    assert image.alpha is not None and image.alpha.shape == (220, 340)
    assert image.alpha[:, : SMALL.width // 2 - 8].max() <= 8
    assert image.alpha[:, SMALL.width // 2 + 8 :].min() >= 247
    right = slice(SMALL.width // 2 + 8, None)
    assert _mean_diff(image.rgb[:, right], np.asarray(SMALL)[:, right]) < 3
    assert decode_image(heif_bytes(SMALL.convert("RGBA")), LIMIT).alpha is None


@pytest.mark.parametrize("twelve_bit", [False, True], ids=["10-bit", "12-bit"])
def test_high_bit_depth_becomes_8_bit_rgb(monkeypatch: pytest.MonkeyPatch, twelve_bit: bool) -> None:
    monkeypatch.setattr(pillow_heif.options, "SAVE_HDR_TO_12_BIT", twelve_bit)
    sixteen = np.asarray(SMALL, dtype=np.uint16) * 257
    container = pillow_heif.from_bytes(mode="RGB;16", size=SMALL.size, data=sixteen.tobytes())
    buffer = BytesIO()
    container.save(buffer, quality=95)
    data = buffer.getvalue()
    assert pillow_heif.open_heif(data, convert_hdr_to_8bit=False).info["bit_depth"] == (12 if twelve_bit else 10)
    image = decode_image(data, LIMIT)
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (220, 340, 3)
    assert _mean_diff(image.rgb, np.asarray(SMALL)) < 3, "high bits were clipped or shifted, not scaled"


def test_grid_of_tiles_decodes_whole() -> None:
    data = heif_bytes(photo(), tile_size=256)  # phones write 512x512 tiles
    assert pillow_heif.open_heif(data).info["tiling"]["num_columns"] == 3
    image = decode_image(data, LIMIT)
    assert image.rgb.shape == (440, 680, 3)
    assert _mean_diff(image.rgb, np.asarray(photo())) < 3


def test_icc_profile_is_carried() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    container = pillow_heif.from_pillow(SMALL)
    container[0].info["icc_profile"] = profile
    buffer = BytesIO()
    container.save(buffer, quality=90)
    assert decode_image(buffer.getvalue(), LIMIT).icc_profile == profile
    assert decode_image(heif_bytes(SMALL), LIMIT).icc_profile is None


def test_monochrome_becomes_gray_rgb() -> None:
    image = decode_image(heif_bytes(SMALL.convert("L")), LIMIT)
    assert image.rgb.shape == (220, 340, 3)
    assert (image.rgb[..., 0] == image.rgb[..., 2]).all()
    assert _mean_diff(image.rgb[..., 0], np.asarray(SMALL.convert("L"))) < 3


def test_over_the_pixel_limit_is_413_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    data = heif_bytes(SMALL)

    def no_decoding(self: object) -> None:
        raise AssertionError("pixels were decoded before the limit was checked")

    monkeypatch.setattr(pillow_heif.heif.BaseImage, "load", no_decoding)
    with pytest.raises(ApiError) as caught:
        decode_image(data, 340 * 220 - 1)
    assert (caught.value.status, caught.value.code) == (413, "image_too_large")
    assert "340x220" in caught.value.message
    with pytest.raises(AssertionError, match="pixels were decoded"):  # the guard does catch a decode
        decode_image(data, 340 * 220)


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (100_000, 100_000)])
def test_a_header_that_claims_a_huge_size_costs_nothing(width: int, height: int) -> None:
    data = bytearray(heif_bytes(SMALL))
    at = data.find(b"ispe")  # full box: type, version and flags, then width and height
    assert at > 0 and data.find(b"ispe", at + 4) < 0
    data[at + 8 : at + 16] = struct.pack(">II", width, height)
    started = time.perf_counter()
    with pytest.raises(ApiError) as caught:
        decode_image(bytes(data), LIMIT)
    assert (caught.value.status, caught.value.code) == (413, "image_too_large")
    assert time.perf_counter() - started < 0.1


def test_truncated_or_corrupt_heif_is_422() -> None:
    data = heif_bytes(SMALL)
    broken = [data[:cut] for cut in (24, 100, 300, len(data) // 2, len(data) - 50, len(data) - 1)]
    broken.append(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    broken.append(data[:40] + bytes(len(data) - 40))  # the boxes after ftyp zeroed
    for body in broken:
        with pytest.raises(ApiError) as caught:
            decode_image(body, LIMIT)
        assert (caught.value.status, caught.value.code) == (422, "unreadable_image"), len(body)


def test_pillow_heif_is_imported_on_the_first_heif_only() -> None:
    script = (
        "import sys\n"
        "from app.main import create_app\n"
        "from app.imaging.decode import decode_image\n"
        "size, rest = sys.stdin.buffer.read().split(b' ', 1)\n"
        "heic, png = rest[: int(size)], rest[int(size) :]\n"
        "decode_image(png, 10**8)\n"
        "assert 'pillow_heif' not in sys.modules, 'imported at start-up or for a PNG'\n"
        "assert decode_image(heic, 10**8).rgb.shape == (40, 64, 3)\n"
        "assert 'pillow_heif' in sys.modules\n"
    )
    tiny = SMALL.resize((64, 40))
    heic = heif_bytes(tiny)
    stdin = b"%d %s%s" % (len(heic), heic, to_bytes(tiny, "PNG"))
    subprocess.run([sys.executable, "-c", script], input=stdin, cwd=REPO, check=True, timeout=60)
