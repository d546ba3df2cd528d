"""Hostile images made in code: each is small to send and, undefended, costly to decode or encode.

The decode amplifiers of issue 21: a progressive JPEG with thousands of scans, millions of JPEG
markers, a TIFF tile far larger than its image, a 1xN PNG, PNGs of countless chunks, and ICC
profiles that are huge or not profiles at all. Shared by tests/imaging/test_amplifiers.py and
bench/decode_amplifiers.py.
"""

from __future__ import annotations

import re
import struct
import zlib
from io import BytesIO

import numpy as np
from PIL import Image

_MARKER_AFTER_SCAN = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def _jpeg(image: Image.Image, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, "JPEG", **params)
    return buffer.getvalue()


def _last_scan(data: bytes) -> tuple[int, int]:
    """Where the last scan (its SOS segment and entropy-coded data) starts and ends."""
    start = data.rfind(b"\xff\xda")
    header_end = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
    found = _MARKER_AFTER_SCAN.search(data, header_end)
    return start, found.start() if found else len(data)


def progressive_jpeg_with_scans(side: int, scans: int) -> bytes:
    """A flat progressive JPEG whose last scan is repeated until it has ``scans``: each copy is a few
    dozen bytes (one run of empty blocks) and costs the decoder a pass over every block."""
    data = _jpeg(Image.new("RGB", (side, side), (120, 130, 140)), progressive=True, quality=90)
    start, end = _last_scan(data)
    own = data.count(b"\xff\xda")
    return data[:end] + data[start:end] * max(0, scans - own) + data[end:]


def jpeg_with_comments(count: int, width: int = 64, height: int = 48) -> bytes:
    """A small JPEG with ``count`` empty COM segments (4 bytes each) before its first scan."""
    data = _jpeg(Image.new("RGB", (width, height), (90, 60, 30)))
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def jpeg_with_app_segments(count: int, size: int = 65533) -> bytes:
    """A small JPEG with ``count`` full APP15 segments of ``size`` bytes each: metadata, not pixels."""
    data = _jpeg(Image.new("RGB", (32, 24), (90, 60, 30)))
    segment = b"\xff\xef" + (size + 2).to_bytes(2, "big") + b"\x00" * size
    return data[:2] + segment * count + data[2:]


def icc_profile(size: int, valid: bool = True) -> bytes:
    """``size`` bytes shaped like an ICC profile (size field, 'acsp' at 36), or random bytes that are not one."""
    body = bytearray(np.random.default_rng(size).bytes(size))
    if valid:
        body[0:4] = size.to_bytes(4, "big")
        body[36:40] = b"acsp"
    else:
        body[36:40] = b"nope"
    return bytes(body)


def jpeg_with_icc(profile: bytes, width: int = 32, height: int = 24) -> bytes:
    """A small JPEG carrying ``profile`` as APP2 ICC_PROFILE segments (Pillow splits it)."""
    return _jpeg(Image.new("RGB", (width, height), (200, 40, 40)), icc_profile=profile)


def tiff_with_huge_tile(side: int = 16, tile: int = 4096, claimed_bytes: int | None = None) -> bytes:
    """A ``side`` x ``side`` RGB TIFF in one deflated ``tile`` x ``tile`` tile of zeros: a few kilobytes
    on the wire, ``3 * tile**2`` bytes once inflated, of which the image uses ``3 * side**2``. ``claimed_bytes``
    replaces the tile's true byte count."""
    pixels = zlib.compress(bytes(3 * tile * tile), 9)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, side),  # ImageWidth
        (257, 4, 1, side),  # ImageLength
        (258, 3, 3, None),  # BitsPerSample 8,8,8 (at an offset)
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 2),  # Photometric: RGB
        (277, 3, 1, 3),  # SamplesPerPixel
        (284, 3, 1, 1),  # PlanarConfiguration: chunky
        (322, 4, 1, tile),  # TileWidth
        (323, 4, 1, tile),  # TileLength
        (324, 4, 1, None),  # TileOffsets
        (325, 4, 1, len(pixels) if claimed_bytes is None else claimed_bytes),  # TileByteCounts
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 6
    ifd = bytearray(struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_at
        elif tag == 324:
            value = pixels_at
        field = struct.pack("<H", value) + b"\x00\x00" if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + field
    ifd += b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + bytes(ifd) + struct.pack("<HHH", 8, 8, 8) + pixels


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, extra_chunks: list[bytes] | None = None, idat_size: int = 0) -> bytes:
    """A black 8-bit gray PNG made by hand (so its shape may be anything), with ``extra_chunks`` before
    its image data, and that data cut into IDAT chunks of ``idat_size`` bytes (0: one chunk)."""
    rows = zlib.compress(bytes((width + 1) * height), 9)
    parts = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))]
    parts += extra_chunks or []
    step = idat_size or len(rows)
    parts += [_png_chunk(b"IDAT", rows[at : at + step]) for at in range(0, len(rows), step)]
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def png_with_chunks(count: int, kind: bytes = b"tEXt", body: bytes = b"a\x00b") -> bytes:
    """A 16x16 PNG with ``count`` small ancillary chunks before its image data."""
    return png(16, 16, [_png_chunk(kind, body)] * count)


def png_with_ztxt(count: int, inflated: int = 1_000_000) -> bytes:
    """A 16x16 PNG with ``count`` zTXt chunks, each inflating to ``inflated`` bytes: a text bomb."""
    body = b"Comment\x00\x00" + zlib.compress(b"a" * inflated, 9)
    return png(16, 16, [_png_chunk(b"zTXt", body)] * count)


def webp_with_icc(profile: bytes, width: int = 32, height: int = 24) -> bytes:
    """A small WebP carrying ``profile`` in its ICCP chunk, which has no size limit of its own (JPEG's APP2
    segments hold at most 255 x 65,519 bytes)."""
    buffer = BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "WEBP", icc_profile=profile)
    return buffer.getvalue()
