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
from app.imaging.encode import MEDIA_TYPES, WHITE, Cutout, EncoderSettings, OutputFormat, encode, foreground_box
from app.matting import Matte, alpha_from_map, combine_alpha, refine_matte
from app.model import SaliencyModel
from app.settings import Settings


@dataclass(frozen=True)
class RemoveOptions:
    format: OutputFormat = "png"
    background: RGBA | None = None  # None: transparent (white for JPEG)
    mask_only: bool = False
    crop: bool = False
    refine: bool = True  # guided-filter edges and decontaminated edge colours


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 60_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(max_pixels=settings.max_pixels)


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
    # One box-filtered reduction of the photo serves the model and the refinement's guide.
    preview = model.reduce(image.rgb)
    prob = model.predict(preview)
    watch.lap("model")
    if options.refine:
        matte = refine_matte(image.rgb, prob, preview=preview)
    else:
        matte = Matte(alpha_from_map(prob, image.width, image.height))
    matte.alpha = combine_alpha(matte.alpha, image.alpha)
    watch.lap("matte")

    cutout = _cutout(image.rgb, matte, options)
    body = encode(cutout, options.format, encoder, image.icc_profile)
    watch.lap("encode")
    return Result(
        body=body,
        media_type=MEDIA_TYPES[options.format],
        width=cutout.width,
        height=cutout.height,
        timings_ms=watch.timings_ms,
    )


def _cutout(rgb: np.ndarray, matte: Matte, options: RemoveOptions) -> Cutout:
    background = _flatten_for_jpeg(options.background) if options.format == "jpeg" else options.background
    region = foreground_box(matte.alpha) if options.crop else None
    return Cutout(rgb, matte.alpha, background, options.mask_only, region, matte.foreground)


def _flatten_for_jpeg(background: RGBA | None) -> RGBA:
    """JPEG has no alpha: a missing or translucent background is laid over white."""
    if background is None:
        return WHITE
    red, green, blue, opacity = background
    a = opacity / 255.0
    return (round(red * a + 255 * (1 - a)), round(green * a + 255 * (1 - a)), round(blue * a + 255 * (1 - a)), 255)
