"""``remove_background``: bytes and options in, an encoded cut-out and its facts out.

Plain synchronous Python with no knowledge of HTTP or threads, so the API,
the CLI, the tests and the benchmarks all run exactly the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from app.imaging.color import RGBA
from app.imaging.decode import decode_image
from app.imaging.encode import MEDIA_TYPES, WHITE, EncoderSettings, OutputFormat, compose, encode, foreground_box
from app.matting import alpha_from_map, combine_alpha
from app.model import SaliencyModel


@dataclass(frozen=True)
class RemoveOptions:
    format: OutputFormat = "png"
    background: RGBA | None = None  # None: transparent (white for JPEG)
    mask_only: bool = False
    crop: bool = False


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 60_000_000


@dataclass
class Result:
    body: bytes
    media_type: str
    width: int
    height: int
    timings_ms: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    def __init__(self) -> None:
        self.timings_ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings_ms[name] = round((now - self._last) * 1000.0, 1)
        self._last = now


def remove_background(
    data: bytes,
    options: RemoveOptions,
    model: SaliencyModel,
    limits: Limits = Limits(),
    encoder: EncoderSettings = EncoderSettings(),
) -> Result:
    watch = _Stopwatch()
    image = decode_image(data, limits.max_pixels)
    watch.lap("decode")
    prob = model.predict(image.rgb)
    watch.lap("model")
    alpha = combine_alpha(alpha_from_map(prob, image.width, image.height), image.alpha)
    watch.lap("matte")

    pixels = _render(image.rgb, alpha, options)
    icc_profile = image.icc_profile
    del image, alpha  # free the full-size arrays before the encoder allocates its own
    watch.lap("compose")
    body = encode(pixels, options.format, encoder, icc_profile)
    watch.lap("encode")
    height, width = pixels.shape[:2]
    media_type = MEDIA_TYPES[options.format]
    return Result(body=body, media_type=media_type, width=width, height=height, timings_ms=watch.timings_ms)


def _render(rgb: np.ndarray, alpha: np.ndarray, options: RemoveOptions) -> np.ndarray:
    """The pixels to encode: the mask or the composed cut-out, cropped if asked."""
    if options.crop:
        box = foreground_box(alpha)
        if box is not None:
            left, top, right, bottom = box
            rgb, alpha = rgb[top:bottom, left:right], alpha[top:bottom, left:right]
    if options.mask_only:
        return np.ascontiguousarray(alpha)
    background = _flatten_for_jpeg(options.background) if options.format == "jpeg" else options.background
    return compose(rgb, alpha, background)


def _flatten_for_jpeg(background: RGBA | None) -> RGBA:
    """JPEG has no alpha: a missing or translucent background is laid over white."""
    if background is None:
        return WHITE
    red, green, blue, opacity = background
    a = opacity / 255.0
    return (round(red * a + 255 * (1 - a)), round(green * a + 255 * (1 - a)), round(blue * a + 255 * (1 - a)), 255)
