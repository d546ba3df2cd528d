"""Lay a cut-out on its canvas: crop with margins, scale and place, drop shadow, background photo.

Whole-picture operations on a ``Layer`` (straight colours and their alpha,
both ``uint8``), for the remove.bg-compatible API. The plain ``/remove`` path
never comes here: it composes band by band in ``encode``. Lengths given in
pixels or percent (``Length``) are resolved here against the size they refer to.
The shadow and the background photo cost a few times the canvas's pixels,
whatever the subject's size or the photo's aspect: their float work is done a
band of rows at a time, and the pictures they scale are cropped first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from app import errors
from app.imaging.encode import Region

SHADOW_OPACITY = 0.5
SHADOW_BLUR = 0.03  # Gaussian sigma, as a fraction of the subject's shorter side
SHADOW_OFFSET = (0.01, 0.02)  # right and down, as fractions of the subject's width and height
SHADOW_WORK_SIGMA = 4.0  # the shadow is blurred where its sigma is this many pixels or a little more (below: as is)
BAND_PIXELS = 1 << 20  # composed this many pixels at a time


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
    shadow = _Shadow(layer.alpha, sigma, (SHADOW_OFFSET[0] * width, SHADOW_OFFSET[1] * height))
    rgb, out_alpha = np.empty_like(layer.rgb), np.empty_like(layer.alpha)
    for rows in _bands(layer.height, layer.width):
        alpha = layer.alpha[rows].astype(np.float32) * np.float32(1.0 / 255.0)
        shaded = alpha + shadow.rows(rows) * (1.0 - alpha)
        ratio = alpha / np.maximum(shaded, 1e-6)  # black adds no colour
        rgb[rows] = _to_uint8(layer.rgb[rows].astype(np.float32) * ratio[:, :, None])
        out_alpha[rows] = _to_uint8(shaded * 255.0)
    return Layer(rgb, out_alpha)


class _Shadow:
    """The shadow's opacity (float32, 0 to ``SHADOW_OPACITY``), made at a reduced resolution and read back by rows.

    A Gaussian blur costs its kernel's width per pixel, and a shadow holds no detail finer than its blur: so the
    alpha is shrunk until the blur is ``SHADOW_WORK_SIGMA`` pixels or a little more, shifted and blurred there,
    and enlarged (bilinear) one band of rows at a time as the caller composes. Only the window the shadow can
    reach is worked on (a small subject on a large canvas costs its own pixels). So its cost is a few times the
    canvas's pixels at most, whatever the subject's size (a 60 MP photo's blur of sigma 180 took minutes at full
    size), and no full-size float canvas is made. Shrinking and enlarging blur a little themselves; the blur made
    here is narrowed by as much, so the shadow looks as one made at full size.
    """

    def __init__(self, alpha: np.ndarray, sigma: float, offset: tuple[float, float]) -> None:
        self.height, self.width = alpha.shape
        shrink = max(1, math.floor(sigma / SHADOW_WORK_SIGMA))
        self.shrunk = shrink > 1
        self.window = _shadow_window(alpha, sigma, offset, shrink)
        left, top, right, bottom = self.window
        alpha = alpha[top:bottom, left:right]
        small = alpha
        if self.shrunk:
            size = (max(1, math.ceil(alpha.shape[1] / shrink)), max(1, math.ceil(alpha.shape[0] / shrink)))
            small = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        self.scale_x, self.scale_y = small.shape[1] / alpha.shape[1], small.shape[0] / alpha.shape[0]
        shift = np.float32([[1, 0, offset[0] * self.scale_x], [0, 1, offset[1] * self.scale_y]])
        small = cv2.warpAffine(small, shift, (small.shape[1], small.shape[0]), flags=cv2.INTER_LINEAR)
        sigma_x, sigma_y = sigma * self.scale_x, sigma * self.scale_y
        if self.shrunk:  # the area filter and the bilinear enlargement add a variance of 1/12 + 1/6 small pixels
            sigma_x, sigma_y = (math.sqrt(max(0.25, value * value - 0.25)) for value in (sigma_x, sigma_y))
        small = small.astype(np.float32) * np.float32(SHADOW_OPACITY / 255.0)
        # mirrored about the edge: about the last small pixel would put the mirror half a small pixel (several
        # full-size ones) inside where the full-size blur has it, about its last pixel
        border = cv2.BORDER_REFLECT if self.shrunk else cv2.BORDER_REFLECT_101
        self.small = cv2.GaussianBlur(small, (0, 0), sigma_x, sigmaY=sigma_y, borderType=border)

    def rows(self, rows: slice) -> np.ndarray:
        """The shadow's opacity at full size in ``rows`` of the canvas: none outside its window."""
        band = np.zeros((rows.stop - rows.start, self.width), np.float32)
        left, top, right, bottom = self.window
        first, last = max(rows.start, top), min(rows.stop, bottom)
        if first < last:
            band[first - rows.start : last - rows.start, left:right] = self._enlarged(first - top, last - top)
        return band

    def _enlarged(self, top: int, bottom: int) -> np.ndarray:
        """Rows ``top`` to ``bottom`` of the window at full size."""
        if not self.shrunk:
            return self.small[top:bottom]
        # where each pixel's centre falls on the small picture, as cv2.resize maps it
        to_small = np.float64(
            [
                [self.scale_x, 0, 0.5 * self.scale_x - 0.5],
                [0, self.scale_y, (top + 0.5) * self.scale_y - 0.5],
            ]
        )
        width = self.window[2] - self.window[0]
        return cv2.warpAffine(
            self.small,
            to_small,
            (width, bottom - top),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )


def _shadow_window(alpha: np.ndarray, sigma: float, offset: tuple[float, float], shrink: int) -> Region:
    """Where the shadow can be seen: around the alpha's non-zero box and its shifted copy, as far as the blur reaches.

    OpenCV's float kernel reaches 4 sigma; shrinking and shifting reach a few pixels more. Beyond that the shadow
    is zero, and within it the blur sees the same zeros at the window's edge as it would on the whole canvas.
    """
    height, width = alpha.shape
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return 0, 0, min(1, width), min(1, height)
    reach = math.ceil(4.0 * sigma) + 2 * shrink + 2
    left = math.floor(min(cols[0], cols[0] + offset[0])) - reach
    right = math.ceil(max(cols[-1] + 1, cols[-1] + 1 + offset[0])) + reach
    top = math.floor(min(rows[0], rows[0] + offset[1])) - reach
    bottom = math.ceil(max(rows[-1] + 1, rows[-1] + 1 + offset[1])) + reach
    return max(0, left), max(0, top), min(width, right), min(height, bottom)


def over_photo(layer: Layer, background: np.ndarray) -> Layer:
    """The layer over a background photo, which is scaled to cover the canvas and centred."""
    canvas = cover(background, layer.width, layer.height)
    for rows in _bands(layer.height, layer.width):  # in integers: (fg * a + bg * (255 - a)) / 255, rounded
        alpha = layer.alpha[rows][:, :, None].astype(np.uint16)
        blended = layer.rgb[rows] * alpha + canvas[rows] * (255 - alpha) + 127
        canvas[rows] = blended // 255
    return Layer(canvas, np.full_like(layer.alpha, 255))


def cover(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """``picture`` scaled to cover ``width`` x ``height``, centred and cropped to it: always a new array.

    Only the part that will be seen is resampled, straight to the canvas's size, so the cost is the canvas's
    pixels whatever the picture's aspect: a 1x3000 strip behind a 500x500 canvas, scaled whole, would be
    500x1,500,000 pixels first. However thin the part seen (a fraction of one source pixel), it is one colour
    sampled from the picture, never an empty or huge array.
    """
    source_height, source_width = picture.shape[:2]
    factor = max(width / source_width, height / source_height)
    if factor == 1:  # as large as the canvas one way: a plain crop of the other
        left, top = (source_width - width) // 2, (source_height - height) // 2
        return picture[top : top + height, left : left + width].copy()
    seen_width, seen_height = width / factor, height / factor  # in source pixels, at most the whole picture
    left, top = (source_width - seen_width) / 2.0, (source_height - seen_height) / 2.0
    if factor < 1:  # shrinking (area filter) the whole source pixels seen, then cropping the part of one over
        x0, y0 = math.floor(left), math.floor(top)
        x1, y1 = math.ceil(left + seen_width), math.ceil(top + seen_height)
        size = (max(width, round((x1 - x0) * factor)), max(height, round((y1 - y0) * factor)))
        scaled = cv2.resize(picture[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        dx = min(size[0] - width, round((left - x0) * factor))
        dy = min(size[1] - height, round((top - y0) * factor))
        return np.ascontiguousarray(scaled[dy : dy + height, dx : dx + width])
    # enlarging: each canvas pixel's centre mapped into the picture, as cv2.resize maps it
    to_source = np.float64([[1.0 / factor, 0, left + 0.5 / factor - 0.5], [0, 1.0 / factor, top + 0.5 / factor - 0.5]])
    return cv2.warpAffine(
        picture,
        to_source,
        (width, height),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _bands(height: int, width: int) -> Iterator[slice]:
    """Slices of rows of about ``BAND_PIXELS`` pixels: float temporaries of a band, never of the whole canvas."""
    step = max(1, BAND_PIXELS // max(1, width))
    for top in range(0, height, step):
        yield slice(top, min(height, top + step))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)
