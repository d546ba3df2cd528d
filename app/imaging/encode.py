"""Compose the cut-out (alpha, background colour, crop) and encode it.

Colours stay straight (not premultiplied): a semi-transparent edge pixel
keeps its own colour and only its alpha says how much of it there is.
Composition runs over bands of rows so that no full-size float copy of a
large photo ever exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Literal

import numpy as np
from PIL import Image

from app import errors
from app.imaging.color import RGBA

OutputFormat = Literal["png", "webp", "jpeg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
WHITE: RGBA = (255, 255, 255, 255)
CROP_ALPHA_THRESHOLD = 8  # alpha above this counts as subject when cropping (3 %)
_BAND_ROWS = 256
_WEBP_MAX_SIDE = 16383
_JPEG_MAX_SIDE = 65500


@dataclass(frozen=True)
class EncoderSettings:
    png_compress_level: int = 1
    jpeg_quality: int = 90
    webp_quality: int = 90


def foreground_box(alpha: np.ndarray, threshold: int = CROP_ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the pixels above ``threshold``, or ``None`` if there are none."""
    rows = np.flatnonzero(alpha.max(axis=1) > threshold)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha[rows[0] : rows[-1] + 1].max(axis=0) > threshold)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def compose(rgb: np.ndarray, alpha: np.ndarray, background: RGBA | None) -> np.ndarray:
    """The cut-out as RGBA, or RGB when the background is opaque."""
    if background is None or background[3] == 0:
        return _transparent(rgb, alpha)
    if background[3] == 255:
        return _over_opaque(rgb, alpha, background)
    return _over_translucent(rgb, alpha, background)


def _transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA with fully transparent pixels blanked: the removed background must not
    survive hidden in the colour channels, and the blank runs compress to nothing."""
    out = np.empty((*alpha.shape, 4), dtype=np.uint8)
    for top in range(0, rgb.shape[0], _BAND_ROWS):
        rows = slice(top, top + _BAND_ROWS)
        band_alpha = alpha[rows]
        out[rows, :, :3] = rgb[rows]
        out[rows, :, 3] = band_alpha
        out[rows, :, :3][band_alpha == 0] = 0
    return out


def _over_opaque(rgb: np.ndarray, alpha: np.ndarray, background: RGBA) -> np.ndarray:
    out = np.empty(rgb.shape, dtype=np.uint8)
    bg = np.array(background[:3], dtype=np.float32)
    for top in range(0, rgb.shape[0], _BAND_ROWS):
        rows = slice(top, top + _BAND_ROWS)
        a = alpha[rows, :, None].astype(np.float32) * (1.0 / 255.0)
        band = rgb[rows].astype(np.float32)
        band -= bg
        band *= a
        band += bg + 0.5
        out[rows] = band.astype(np.uint8)
    return out


def _over_translucent(rgb: np.ndarray, alpha: np.ndarray, background: RGBA) -> np.ndarray:
    """Porter-Duff 'over' with straight alpha on both sides."""
    out = np.empty((*alpha.shape, 4), dtype=np.uint8)
    bg = np.array(background[:3], dtype=np.float32)
    bg_a = background[3] / 255.0
    for top in range(0, rgb.shape[0], _BAND_ROWS):
        rows = slice(top, top + _BAND_ROWS)
        a = alpha[rows, :, None].astype(np.float32) * (1.0 / 255.0)
        out_a = a + bg_a * (1.0 - a)
        colour = (rgb[rows].astype(np.float32) * a + bg * (bg_a * (1.0 - a))) / out_a
        out[rows, :, :3] = (colour + 0.5).astype(np.uint8)
        out[rows, :, 3] = (out_a[..., 0] * 255.0 + 0.5).astype(np.uint8)
    return out


def encode(pixels: np.ndarray, fmt: OutputFormat, settings: EncoderSettings, icc_profile: bytes | None = None) -> bytes:
    """Encode an L, RGB or RGBA ``uint8`` array; JPEG gets no alpha, so flatten before."""
    height, width = pixels.shape[:2]
    if fmt == "webp" and max(width, height) > _WEBP_MAX_SIDE:
        raise errors.invalid_option(f"WebP holds at most {_WEBP_MAX_SIDE} px a side; this output is {width}x{height}. Use format=png.")
    if fmt == "jpeg" and max(width, height) > _JPEG_MAX_SIDE:
        raise errors.invalid_option(f"JPEG holds at most {_JPEG_MAX_SIDE} px a side; this output is {width}x{height}. Use format=png.")
    image = Image.fromarray(pixels)
    buffer = BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile and image.mode != "L" else {}
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=settings.png_compress_level, **extra)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=settings.webp_quality, method=4, **extra)
    else:
        image.save(buffer, "JPEG", quality=settings.jpeg_quality, **extra)
    return buffer.getvalue()
