"""Cost bounds on the decoders' amplifiers, checked on the container before a pixel is decoded.

MAX_PIXELS bounds what an image holds, not what it costs to get there: a progressive JPEG
decodes every block once per scan, Pillow parses every JPEG marker and PNG chunk in Python,
and a TIFF tile is inflated whole however little of it the image shows. Each of those is a
few bytes on the wire, so each gets a cap far above what real files need, found by walking
the container's segments (cheap: the entropy-coded data is skipped by a regex, in C).

ICC profiles are the other kind: copied into the output, so one that is not a profile at all,
or is huge, is dropped (the caller says so in a header) rather than refused.
"""

from __future__ import annotations

import re

from PIL import Image

from app import errors

# libjpeg's default progressive script has 10 scans (18 for CMYK); each scan costs a pass over
# every block of its components: at 60 MP, 64 scans decode in about 3 s.
JPEG_MAX_SCANS = 64
# Markers besides scans: real files have a dozen or two (APPn, DQT, DHT, SOF, DRI), a 16 MB
# ICC profile 256; Pillow parses each one in Python (5 M of them: 4 s and +370 MB).
JPEG_MAX_MARKERS = 1_000
# Chunks of any kind: libpng writes 8 KB IDAT chunks, so a 30 MB PNG has about 4,000; Pillow
# reads each in Python (2 M of them: 4.3 s).
PNG_MAX_CHUNKS = 65_536
PNG_MAX_TEXT_CHUNKS = 256  # tEXt, zTXt, iTXt: each zTXt Pillow inflates up to 1 MB
MAX_METADATA_BYTES = 16 * 1024 * 1024  # JPEG APPn and COM, PNG text, iCCP and eXIf, together
# Neither side may exceed this (JPEG holds 65,500, WebP 16,383): a longer one comes only from files
# made by hand, such as a 117 KB 1x60,000,000 PNG that took 23 s and 1.2 GB for nothing a model can see.
MAX_SIDE = 65_535
# A TIFF tile may be larger than a small image (256x256 tiles on a 16x16 icon), but not beyond this
# or the image's own pixels, whichever is more: the whole tile is inflated (16384x16384: +770 MB).
TIFF_MIN_TILE_CAP = 1024 * 1024
MAX_ICC_BYTES = 1024 * 1024  # real RGB profiles are 0.5-600 KB; Pillow's PNG reader drops larger ones too
_ICC_HEADER_BYTES = 128

_MARKER_AFTER_SCAN = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")  # not stuffing (FF00), a restart, or a fill byte
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn: no length field
_JPEG_SOS, _JPEG_EOI, _JPEG_COM = 0xDA, 0xD9, 0xFE
_PNG_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_PNG_METADATA = _PNG_TEXT | {b"iCCP", b"eXIf"}
_TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 322, 323
_TIFF_BYTE_COUNTS = (279, 325)  # StripByteCounts, TileByteCounts


def check_sides(width: int, height: int) -> None:
    """Refuse a side longer than ``MAX_SIDE``, whatever the pixel count."""
    if max(width, height) > MAX_SIDE:
        raise errors.side_too_long(width, height, MAX_SIDE)


def check_jpeg(data: bytes) -> None:
    """Walk the JPEG's marker segments up to its end-of-image: scans, other markers and metadata bytes capped."""
    position, scans, markers, metadata = 2, 0, 0, 0
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == _JPEG_EOI:
            return
        if marker != _JPEG_SOS:
            markers += 1  # fill bytes and stray restarts too: a run of either is as slow to walk
            if markers > JPEG_MAX_MARKERS:
                raise errors.too_many_segments("JPEG markers", JPEG_MAX_MARKERS)
        if marker == 0xFF or marker in _JPEG_STANDALONE:
            position += 1 if marker == 0xFF else 2
            continue
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == _JPEG_SOS:
            scans += 1
            if scans > JPEG_MAX_SCANS:
                raise errors.too_many_scans(JPEG_MAX_SCANS)
            after_scan = _MARKER_AFTER_SCAN.search(data, end)
            if after_scan is None:
                return  # truncated: the decoder says so
            end = after_scan.start()
        elif 0xE0 <= marker <= 0xEF or marker == _JPEG_COM:
            metadata += end - position
            if metadata > MAX_METADATA_BYTES:
                raise errors.too_much_metadata(MAX_METADATA_BYTES)
        position = end


def check_png(data: bytes) -> None:
    """Walk the PNG's chunk headers up to IEND: chunk count, text chunks and metadata bytes capped."""
    position, chunks, texts, metadata = 8, 0, 0, 0
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"IEND":
            return
        chunks += 1
        if chunks > PNG_MAX_CHUNKS:
            raise errors.too_many_segments("PNG chunks", PNG_MAX_CHUNKS)
        if kind in _PNG_METADATA:
            texts += kind in _PNG_TEXT
            metadata += length
            if texts > PNG_MAX_TEXT_CHUNKS:
                raise errors.too_many_segments("PNG text chunks", PNG_MAX_TEXT_CHUNKS)
            if metadata > MAX_METADATA_BYTES:
                raise errors.too_much_metadata(MAX_METADATA_BYTES)
        position += 12 + length


def check_tiff(image: Image.Image, data_size: int) -> None:
    """A TIFF's tiles no larger than its image needs, and its strips' or tiles' bytes within the file.

    Read from the tags after ``open()``, before ``load()``: libtiff allocates and inflates a whole
    tile, and trusts the byte counts for its read buffers."""
    tags = getattr(image, "tag_v2", {})
    width, height = image.size
    tile_width, tile_length = tags.get(_TIFF_TILE_WIDTH), tags.get(_TIFF_TILE_LENGTH)
    if isinstance(tile_width, int) and isinstance(tile_length, int):
        tile_cap = max(width * height, TIFF_MIN_TILE_CAP)
        if tile_width * tile_length > tile_cap:
            raise errors.implausible_tiff(f"its {tile_width}x{tile_length} tiles are far larger than its {width}x{height} pixels")
    for tag in _TIFF_BYTE_COUNTS:
        counts = tags.get(tag)
        if isinstance(counts, int):
            counts = (counts,)
        if isinstance(counts, tuple) and sum(count for count in counts if isinstance(count, int)) > data_size:
            raise errors.implausible_tiff(f"its byte counts add up to more than the file's {data_size:,} bytes")


def usable_icc_profile(profile: bytes | None) -> tuple[bytes | None, bool]:
    """The profile if it looks like one (its size field matches, 'acsp' at 36) and is at most ``MAX_ICC_BYTES``,
    else ``None``; and whether one was dropped."""
    if not profile:
        return None, False
    valid = (
        _ICC_HEADER_BYTES <= len(profile) <= MAX_ICC_BYTES
        and int.from_bytes(profile[:4], "big") == len(profile)
        and profile[36:40] == b"acsp"
    )
    return (profile, False) if valid else (None, True)
