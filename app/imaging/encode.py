"""Compose the cut-out (alpha, background colour, crop) and encode it.

Colours stay straight (not premultiplied): a semi-transparent edge pixel
keeps its own colour and only its alpha says how much of it there is.
A ``Cutout`` is drawn band by band, on demand: the PNG writer pulls bands
straight into its compressors, so a large photo never gets a second
full-size copy (and never a float one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from app import errors
from app.imaging.color import RGBA
from app.imaging.png import encode_png
from app.settings import Settings

OutputFormat = Literal["png", "webp", "jpeg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
WHITE: RGBA = (255, 255, 255, 255)
CROP_ALPHA_THRESHOLD = 8  # alpha above this counts as subject when cropping (3 %)
_BAND_ROWS = 256
_WEBP_MAX_SIDE = 16383
_JPEG_MAX_SIDE = 65500
_JPEG_MAX_ICC_SEGMENTS = 255
_MAX_SIDES: dict[str, tuple[str, int]] = {"webp": ("WebP", _WEBP_MAX_SIDE), "jpeg": ("JPEG", _JPEG_MAX_SIDE)}
_VP8X_ICC, _VP8X_ALPHA = 0x20, 0x10


@dataclass(frozen=True)
class EncoderSettings:
    png_compress_level: int = 1
    jpeg_quality: int = 90
    webp_quality: int = 90
    threads: int = 1  # PNG bands deflated in parallel

    @classmethod
    def from_settings(cls, settings: Settings) -> EncoderSettings:
        return cls(settings.png_compress_level, settings.jpeg_quality, settings.webp_quality, settings.encode_threads)


Region = tuple[int, int, int, int]  # left, top, right, bottom
ColourSource = Callable[[np.ndarray, int, int, int, int], np.ndarray]  # (rgb, top, bottom, left, right) -> colours


@dataclass(frozen=True)
class Cutout:
    """The picture to encode: the photo, its alpha, the region to show and how to show it."""

    rgb: np.ndarray  # H x W x 3 uint8, the whole photo
    alpha: np.ndarray  # H x W uint8
    background: RGBA | None = None  # None or fully transparent: keep the alpha
    mask_only: bool = False
    region: Region | None = None  # None: the whole photo
    colours: ColourSource | None = None  # edge colours without the old background; None: the photo's

    @property
    def box(self) -> Region:
        return self.region or (0, 0, int(self.alpha.shape[1]), int(self.alpha.shape[0]))

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def channels(self) -> int:
        if self.mask_only:
            return 1
        return 3 if self.background is not None and self.background[3] == 255 else 4

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows ``top:bottom`` of the output, freshly allocated."""
        left, first, right, _ = self.box
        top, bottom = first + top, first + bottom
        alpha = self.alpha[top:bottom, left:right]
        if self.mask_only:
            return alpha.copy()
        if self.colours is not None:
            rgb = self.colours(self.rgb, top, bottom, left, right)
        else:
            rgb = self.rgb[top:bottom, left:right]
        background = self.background
        if background is None or background[3] == 0:
            return _transparent(rgb, alpha)
        if background[3] == 255:
            return _over_opaque(rgb, alpha, background)
        return _over_translucent(rgb, alpha, background)

    def pixels(self) -> np.ndarray:
        """The whole output as one array, drawn band by band to bound the temporaries."""
        shape = (self.height, self.width) if self.channels == 1 else (self.height, self.width, self.channels)
        out = np.empty(shape, dtype=np.uint8)
        for top in range(0, self.height, _BAND_ROWS):
            out[top : top + _BAND_ROWS] = self.rows(top, min(top + _BAND_ROWS, self.height))
        return out


def foreground_box(alpha: np.ndarray, threshold: int = CROP_ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the pixels above ``threshold``, or ``None`` if there are none."""
    rows = np.flatnonzero(alpha.max(axis=1) > threshold)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha[rows[0] : rows[-1] + 1].max(axis=0) > threshold)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA with fully transparent pixels blanked: the removed background must not
    survive hidden in the colour channels, and the blank runs compress to nothing."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    cv2.mixChannels([alpha], [out], [0, 3])
    _, visible = cv2.threshold(alpha, 0, 255, cv2.THRESH_BINARY)
    cv2.bitwise_and(out, cv2.merge((visible,) * 4), dst=out)
    return out


def _over_opaque(rgb: np.ndarray, alpha: np.ndarray, background: RGBA) -> np.ndarray:
    bg = np.array(background[:3], dtype=np.float32)
    a = alpha[:, :, None].astype(np.float32) * (1.0 / 255.0)
    band = rgb.astype(np.float32)
    band -= bg
    band *= a
    band += bg + 0.5
    return band.astype(np.uint8)


def _over_translucent(rgb: np.ndarray, alpha: np.ndarray, background: RGBA) -> np.ndarray:
    """Porter-Duff 'over' with straight alpha on both sides."""
    out = np.empty((*alpha.shape, 4), dtype=np.uint8)
    bg = np.array(background[:3], dtype=np.float32)
    bg_a = background[3] / 255.0
    a = alpha[:, :, None].astype(np.float32) * (1.0 / 255.0)
    out_a = a + bg_a * (1.0 - a)
    colour = (rgb.astype(np.float32) * a + bg * (bg_a * (1.0 - a))) / out_a
    out[:, :, :3] = (colour + 0.5).astype(np.uint8)
    out[:, :, 3] = (out_a[..., 0] * 255.0 + 0.5).astype(np.uint8)
    return out


def check_output_size(fmt: OutputFormat, width: int, height: int) -> None:
    """Refuse an output its format cannot hold; called before the model too, where the output's size is known."""
    name, limit = _MAX_SIDES.get(fmt, (fmt, max(width, height)))
    if max(width, height) > limit:
        raise errors.output_too_large_for_format(name, width, height, limit)


def encode(cutout: Cutout, fmt: OutputFormat, settings: EncoderSettings, icc_profile: bytes | None = None) -> bytes:
    """Encode the cut-out; JPEG gets no alpha, so give it an opaque background first."""
    check_output_size(fmt, cutout.width, cutout.height)
    colour_profile = icc_profile if cutout.channels > 1 else None
    if fmt == "png":
        return encode_png(cutout, settings.png_compress_level, settings.threads, colour_profile)
    if fmt == "jpeg":
        return encode_jpeg(cutout.pixels(), settings.jpeg_quality, colour_profile)
    return encode_webp(cutout.pixels(), settings.webp_quality, colour_profile)


# JPEG and WebP are written by OpenCV, which lets go of the GIL for the whole encode; Pillow's
# encoders keep it (at 12 MP, 56 ms of a JPEG's 80 ms; bench/gil_holds.py), and while they do,
# every other worker and the event loop wait. OpenCV writes no ICC profile, so we add it.
# OpenCV wants BGR: the colour channels are swapped in the caller's array, which is cheaper than
# a full-size copy (144 MB at 48 MP) and leaves it in BGR order.


def encode_jpeg(pixels: np.ndarray, quality: int, icc_profile: bytes | None = None) -> bytes:
    """Gray or RGB pixels as a baseline 4:2:0 JPEG, as Pillow would write it."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR, dst=pixels)
    jpeg = _opencv_encode("JPEG", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not icc_profile:
        return jpeg
    after_jfif = 4 + int.from_bytes(jpeg[4:6], "big") if jpeg[2:4] == b"\xff\xe0" else 2  # JFIF must stay first
    whole = memoryview(jpeg)  # slices without copies, joined once (a big join lets go of the GIL)
    return b"".join([whole[:after_jfif], *_icc_segments(icc_profile), whole[after_jfif:]])


def encode_webp(pixels: np.ndarray, quality: int, icc_profile: bytes | None = None) -> bytes:
    """Gray, RGB or RGBA pixels as a lossy WebP (method 4, alpha kept losslessly), as Pillow would write it."""
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)  # WebP has no gray: Pillow makes this copy too
    else:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA, dst=pixels)
    webp = _opencv_encode("WebP", pixels, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not icc_profile:
        return webp
    return _webp_with_icc(webp, icc_profile, pixels.shape[1], pixels.shape[0])


def _opencv_encode(name: str, pixels: np.ndarray, parameters: list[int]) -> bytes:
    ok, encoded = cv2.imencode(f".{name.lower()}", pixels, parameters)
    if not ok:  # OpenCV gives no reason; the sides were checked before
        raise errors.invalid_option(f"This picture cannot be written as {name}. Use format=png.")
    return encoded.tobytes()


def _webp_with_icc(webp: bytes, profile: bytes, width: int, height: int) -> bytes:
    """The extended format: a VP8X header with its ICC flag set, then an ICCP chunk, then the image's
    own chunks. A simple file (one VP8 or VP8L chunk) gets the header made for it."""
    chunks = memoryview(webp)[12:]  # after "RIFF", the size and "WEBP"
    if chunks[:4] == b"VP8X":
        header = bytearray(chunks[:18])
        header[8] |= _VP8X_ICC
        chunks = chunks[18:]
    else:
        flags = _VP8X_ICC | (_VP8X_ALPHA if chunks[:4] == b"VP8L" and chunks[12] & 0x10 else 0)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        header = b"VP8X" + (10).to_bytes(4, "little") + bytes((flags, 0, 0, 0)) + canvas
    icc = [b"ICCP", len(profile).to_bytes(4, "little"), profile, b"\x00" * (len(profile) % 2)]
    size = 4 + len(header) + sum(map(len, icc)) + len(chunks)  # "WEBP" and the chunks
    return b"".join([b"RIFF", size.to_bytes(4, "little"), b"WEBP", header, *icc, chunks])


def _icc_segments(profile: bytes) -> list[bytes]:
    """The ICC profile as APP2 ``ICC_PROFILE`` segments, numbered from 1, as the ICC spec lays them out in JPEG;
    none for a profile beyond the 255 segments a JPEG can number (16.7 MB; decode drops those long before)."""
    size = 65535 - 16  # a segment's length field counts itself (2), the tag (12) and the numbers (2)
    parts = [profile[start : start + size] for start in range(0, len(profile), size)]
    if len(parts) > _JPEG_MAX_ICC_SEGMENTS:
        return []
    return [
        b"\xff\xe2" + (len(part) + 16).to_bytes(2, "big") + b"ICC_PROFILE\x00" + bytes((number, len(parts))) + part
        for number, part in enumerate(parts, start=1)
    ]
