"""Lay a cut-out on its canvas: crop with margins, scale and place, drop shadow, background photo.

Whole-picture operations on a ``Layer`` (straight colours and their alpha,
both ``uint8``), for the remove.bg-compatible API. The plain ``/remove`` path
never comes here: it composes band by band in ``encode``. Lengths given in
pixels or percent (``Length``) are resolved here against the size they refer to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from app import errors
from app.imaging.encode import Region

SHADOW_OPACITY = 0.5
SHADOW_BLUR = 0.03  # Gaussian sigma, as a fraction of the subject's shorter side
SHADOW_OFFSET = (0.01, 0.02)  # right and down, as fractions of the subject's width and height


@dataclass(frozen=True)
class Length:
    """A length in pixels, or in percent of a reference the caller names when resolving it."""

    value: float
    percent: bool = False

    def resolve(self, reference: int) -> int:
        return round(reference * self.value / 100.0) if self.percent else round(self.value)


@dataclass(frozen=True)
class BoxSpec:
    """A rectangle as ``x1 y1 x2 y2``, each in pixels or percent of the picture's width or height."""

    left: Length
    top: Length
    right: Length
    bottom: Length

    def resolve(self, width: int, height: int) -> Region:
        """The rectangle in pixels, clipped to the picture; an empty one is the caller's mistake."""
        left, right = (min(width, max(0, length.resolve(width))) for length in (self.left, self.right))
        top, bottom = (min(height, max(0, length.resolve(height))) for length in (self.top, self.bottom))
        if right <= left or bottom <= top:
            raise errors.invalid_option(
                f"The region {left} {top} {right} {bottom} (x1 y1 x2 y2, in pixels) of this {width}x{height} image is empty."
            )
        return left, top, right, bottom


@dataclass
class Layer:
    """A picture with straight (not premultiplied) colours and an alpha channel."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray  # H x W uint8

    @property
    def width(self) -> int:
        return int(self.alpha.shape[1])

    @property
    def height(self) -> int:
        return int(self.alpha.shape[0])

    @classmethod
    def blank(cls, width: int, height: int) -> Layer:
        return cls(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8))

    def region(self, box: Region) -> Layer:
        left, top, right, bottom = box
        return Layer(self.rgb[top:bottom, left:right], self.alpha[top:bottom, left:right])

    def paste(self, other: Layer, left: int, top: int) -> None:
        """Copy ``other`` in with its top-left corner at ``(left, top)``, clipped to this layer."""
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(self.width, left + other.width), min(self.height, top + other.height)
        if x1 <= x0 or y1 <= y0:
            return
        source = other.region((x0 - left, y0 - top, x1 - left, y1 - top))
        self.rgb[y0:y1, x0:x1] = source.rgb
        self.alpha[y0:y1, x0:x1] = source.alpha


def shrink_to_pixels(array: np.ndarray, max_pixels: int) -> np.ndarray:
    """``array`` reduced (area filter, aspect kept) to at most ``max_pixels`` pixels; as is if it fits."""
    height, width = array.shape[:2]
    if width * height <= max_pixels:
        return array
    factor = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * factor)), max(1, math.floor(height * factor)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def crop_with_margins(layer: Layer, box: Region, margins: tuple[int, int, int, int]) -> Layer:
    """The subject's box with transparent margins (top, right, bottom, left) around it."""
    top, right, bottom, left = margins
    subject = layer.region(box)
    canvas = Layer.blank(subject.width + left + right, subject.height + top + bottom)
    canvas.paste(subject, left, top)
    return canvas


def place_subject(
    layer: Layer, box: Region, scale: float | None, position: tuple[float, float] | None
) -> tuple[Layer, Region]:
    """The subject scaled to ``scale`` of the canvas (fitting inside it) and placed at ``position``.

    ``position`` is CSS's background-position: the fraction of the free room to the
    left and above the subject (0.5, 0.5 centres it); ``None`` keeps the subject's own
    centre where it was. Returns the new layer and where the subject's box landed.
    """
    subject = layer.region(box)
    if scale is not None:
        factor = min(scale * layer.width / subject.width, scale * layer.height / subject.height)
        subject = _resized(subject, max(1, round(subject.width * factor)), max(1, round(subject.height * factor)))
    if position is None:
        centre_x, centre_y = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        left, top = round(centre_x - subject.width / 2.0), round(centre_y - subject.height / 2.0)
    else:
        left = round((layer.width - subject.width) * position[0])
        top = round((layer.height - subject.height) * position[1])
    canvas = Layer.blank(layer.width, layer.height)
    canvas.paste(subject, left, top)
    return canvas, (left, top, left + subject.width, top + subject.height)


def _resized(layer: Layer, width: int, height: int) -> Layer:
    """Resample premultiplied, so the blank colour of transparent pixels cannot bleed into the edges."""
    shrinking = width < layer.width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    alpha = layer.alpha.astype(np.float32) * np.float32(1.0 / 255.0)
    premultiplied = layer.rgb.astype(np.float32) * alpha[:, :, None]
    premultiplied = cv2.resize(premultiplied, (width, height), interpolation=interpolation)
    alpha = np.clip(cv2.resize(alpha, (width, height), interpolation=interpolation), 0.0, 1.0)
    rgb = premultiplied / np.maximum(alpha, 1e-6)[:, :, None]
    return Layer(_to_uint8(rgb), _to_uint8(alpha * 255.0))


def drop_shadow(layer: Layer, subject: Region) -> Layer:
    """The layer over a soft, offset, half-opaque black copy of its own alpha."""
    width, height = subject[2] - subject[0], subject[3] - subject[1]
    sigma = max(1.0, SHADOW_BLUR * min(width, height))
    shift = np.float32([[1, 0, SHADOW_OFFSET[0] * width], [0, 1, SHADOW_OFFSET[1] * height]])
    shadow = cv2.warpAffine(layer.alpha, shift, (layer.width, layer.height), flags=cv2.INTER_LINEAR)
    shadow = cv2.GaussianBlur(shadow.astype(np.float32) * np.float32(SHADOW_OPACITY / 255.0), (0, 0), sigma)
    alpha = layer.alpha.astype(np.float32) * np.float32(1.0 / 255.0)
    out_alpha = alpha + shadow * (1.0 - alpha)
    rgb = layer.rgb.astype(np.float32) * (alpha / np.maximum(out_alpha, 1e-6))[:, :, None]  # black adds no colour
    return Layer(_to_uint8(rgb), _to_uint8(out_alpha * 255.0))


def over_photo(layer: Layer, background: np.ndarray) -> Layer:
    """The layer over a background photo, which is scaled to cover the canvas and centred."""
    height, width = background.shape[:2]
    if (width, height) != (layer.width, layer.height):
        factor = max(layer.width / width, layer.height / height)
        size = (max(layer.width, math.ceil(width * factor)), max(layer.height, math.ceil(height * factor)))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        background = cv2.resize(background, size, interpolation=interpolation)
        left, top = (size[0] - layer.width) // 2, (size[1] - layer.height) // 2
        background = background[top : top + layer.height, left : left + layer.width]
    alpha = layer.alpha.astype(np.float32)[:, :, None] * np.float32(1.0 / 255.0)
    rgb = background.astype(np.float32) + (layer.rgb.astype(np.float32) - background) * alpha
    return Layer(_to_uint8(rgb), np.full_like(layer.alpha, 255))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)
