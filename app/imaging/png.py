"""A PNG writer built for big cut-outs: the 'Up' filter, ISA-L's deflate, bands in parallel.

Pillow filters every row adaptively and deflates on one core; for a 48 MP
RGBA cut-out that is most of the request (2.1 s). Filtering each row against
the one above in numpy and deflating bands of rows on several threads (the
compressor releases the GIL), joined into one stream with sync flushes as
pigz does, gives a smaller file in a quarter of the time on two cores.

Levels 0 and 1 deflate with Intel's ISA-L (``isal``): on our cut-outs it is
4x faster than zlib's level 1 (3 against 14 ms at 0.5 MP, 70 against 264 ms
at 12 MP) for files 1 % smaller. Levels 2-9 are zlib's, slower and smaller.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
from isal import isal_zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)
_FILTER_UP = 2
_BAND_BYTES = 4 * 1024 * 1024  # raw bytes per deflate job: big enough to compress well
_ADLER_BASE = 65521
_ISAL_LEVELS = (0, 1)  # ISA-L's 2 and 3 are no smaller on cut-outs, so 2-9 stay zlib's


class RowSource(Protocol):
    """Anything that draws its ``uint8`` rows on demand (gray, RGB or RGBA)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def channels(self) -> int: ...
    def rows(self, top: int, bottom: int) -> np.ndarray: ...


class PixelRows:
    """A ``RowSource`` over an array already in memory."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]
        self.channels = 1 if pixels.ndim == 2 else pixels.shape[2]

    def rows(self, top: int, bottom: int) -> np.ndarray:
        return self.pixels[top:bottom]


def encode_png(source: RowSource | np.ndarray, level: int = 1, threads: int = 1, icc_profile: bytes | None = None) -> bytes:
    """Pull the image band by band, so only a few bands exist beside the source at once."""
    if isinstance(source, np.ndarray):
        source = PixelRows(source)
    height, width, channels = source.height, source.width, source.channels
    row_bytes = width * channels
    band_rows = max(1, _BAND_BYTES // max(1, row_bytes))
    bands = [(top, min(top + band_rows, height)) for top in range(0, height, band_rows)]

    def deflate(band: tuple[int, int]) -> tuple[list[bytes], int, int]:
        top, bottom = band
        first = max(0, top - 1)  # the row above the band, for the Up filter
        rows = np.ascontiguousarray(source.rows(first, bottom)).reshape(bottom - first, row_bytes)
        filtered = _filter_up(rows, has_previous=top > 0)
        compressor = _compressor(level)
        finish = zlib.Z_FINISH if bottom == height else zlib.Z_SYNC_FLUSH
        return [compressor.compress(filtered), compressor.flush(finish)], isal_zlib.adler32(filtered), filtered.size

    if threads > 1 and len(bands) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(bands))) as pool:
            deflated = list(pool.map(deflate, bands))
    else:
        deflated = [deflate(band) for band in bands]

    checksum = 1
    for _, band_checksum, size in deflated:
        checksum = adler32_combine(checksum, band_checksum, size)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    pieces = [_SIGNATURE, *_chunk(b"IHDR", [header])]
    if icc_profile:
        pieces += _chunk(b"iCCP", [b"ICC profile\x00\x00", zlib.compress(icc_profile)])
    pieces += _chunk(b"IDAT", list(_zlib_frame(deflated, checksum)))
    pieces += _chunk(b"IEND", [])
    return b"".join(pieces)  # one copy of the file, and a big join lets go of the GIL (``+`` does not)


def _compressor(level: int) -> zlib._Compress | isal_zlib.Compress:
    """Raw deflate (we write the zlib frame ourselves) at ``level``."""
    if level in _ISAL_LEVELS:
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    return zlib.compressobj(level, zlib.DEFLATED, -15)


def _filter_up(rows: np.ndarray, has_previous: bool) -> np.ndarray:
    """PNG scanlines with filter 2 (Up); with ``has_previous`` the first row is only the reference."""
    band = rows[1:] if has_previous else rows
    out = np.empty((band.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = _FILTER_UP
    if has_previous:
        np.subtract(band, rows[:-1], out=out[:, 1:])
    else:
        out[0, 1:] = band[0]
        np.subtract(band[1:], band[:-1], out=out[1:, 1:])
    return out


def _zlib_frame(deflated: list[tuple[list[bytes], int, int]], checksum: int) -> Iterator[bytes]:
    yield b"\x78\x01"  # zlib header: deflate, 32 KB window, no preset dictionary
    for parts, _, _ in deflated:
        yield from parts
    yield struct.pack(">I", checksum)


def _chunk(kind: bytes, body: list[bytes]) -> list[bytes]:
    """A chunk as pieces, its body never joined on its own; the CRC runs over the pieces in turn."""
    crc = zlib.crc32(kind)
    for part in body:
        crc = zlib.crc32(part, crc)
    return [struct.pack(">I", sum(map(len, body))) + kind, *body, struct.pack(">I", crc)]


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of A+B from those of A and B (zlib's adler32_combine, absent from Python)."""
    remainder = second_length % _ADLER_BASE
    sum1 = first & 0xFFFF
    sum2 = (remainder * sum1) % _ADLER_BASE
    sum1 += (second & 0xFFFF) + _ADLER_BASE - 1
    sum2 += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + _ADLER_BASE - remainder
    sum1 %= _ADLER_BASE
    sum2 %= _ADLER_BASE
    return sum1 | (sum2 << 16)
