"""``remove_background``: bytes and options in, an encoded cut-out and its facts out.

Plain synchronous Python with no knowledge of HTTP or threads, so the API,
the CLI, the tests and the benchmarks all run exactly the same code.

``matte_photo`` is the same decode -> model -> matte, stopping before the
band-wise compose and encode: it hands back the photo and its alpha as whole
arrays, for callers that lay the cut-out out themselves (the remove.bg API).

Between stages, ``stage_boundary()`` stops a job the service no longer wants
(its client went away, or the service is stopping); outside the service's
pool it does nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from app.imaging.color import RGBA
from app.imaging.decode import decode_image
from app.imaging.encode import (
    MEDIA_TYPES,
    WHITE,
    Cutout,
    EncoderSettings,
    OutputFormat,
    Region,
    check_output_size,
    encode,
    foreground_box,
)
from app.imaging.layout import BoxSpec, Layer, shrink_to_pixels
from app.matting import Matte, alpha_from_map, combine_alpha, refine_matte
from app.model import SaliencyModel
from app.model.passes import PLANS, QualityPlan, predict_map
from app.runner import stage_boundary
from app.settings import Settings


@dataclass(frozen=True)
class RemoveOptions:
    format: OutputFormat = "png"
    background: RGBA | None = None  # None: transparent (white for JPEG)
    mask_only: bool = False
    crop: bool = False
    refine: bool = True  # crisp hard edges, matted soft ones, decontaminated edge colours
    quality: str = "balanced"  # fast | balanced | best: the model's passes, see app/model/passes.py


@dataclass(frozen=True)
class MatteOptions:
    refine: bool = True
    quality: str = "balanced"
    max_pixels: int | None = None  # shrink the photo to at most this first: every later stage gets cheaper
    region: BoxSpec | None = None  # of the photo as sent; only in here can be subject, the rest is background


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
    dropped_metadata: tuple[str, ...] = ()  # of the input's, not carried into the output: ("icc",)


@dataclass
class MattedPhoto:
    layer: Layer  # the photo (shrunk if asked), edge colours cleaned of the old background, and its alpha
    icc_profile: bytes | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    dropped_metadata: tuple[str, ...] = ()


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
    with model.in_use():
        watch = _Stopwatch()
        image = decode_image(data, limits.max_pixels)
        if not options.crop:  # the output's size is the photo's: refuse now what the encoder would refuse later
            check_output_size(options.format, image.width, image.height)
        watch.lap("decode")
        stage_boundary()
        matte = _matte(image.rgb, model, options.refine, PLANS[options.quality], watch)
        matte.alpha = combine_alpha(matte.alpha, image.alpha)
        watch.lap("matte")

        stage_boundary()
        cutout = _cutout(image.rgb, matte, options)
        body = encode(cutout, options.format, encoder, image.icc_profile)
        watch.lap("encode")
    return Result(
        body=body,
        media_type=MEDIA_TYPES[options.format],
        width=cutout.width,
        height=cutout.height,
        timings_ms=watch.timings_ms,
        dropped_metadata=image.dropped_metadata,
    )


def matte_photo(data: bytes, options: MatteOptions, model: SaliencyModel, limits: Limits = Limits()) -> MattedPhoto:
    """Decode, shrink, and matte the photo (or only its ``region``), as whole arrays."""
    with model.in_use():
        watch = _Stopwatch()
        image = decode_image(data, limits.max_pixels)
        rgb, own_alpha = image.rgb, image.alpha
        if options.max_pixels is not None:
            rgb = shrink_to_pixels(rgb, options.max_pixels)
            own_alpha = shrink_to_pixels(own_alpha, options.max_pixels) if own_alpha is not None else None
        height, width = rgb.shape[:2]
        region = (0, 0, width, height)
        if options.region is not None:
            region = _scaled(options.region.resolve(image.width, image.height), width / image.width, height / image.height)
        watch.lap("decode")
        stage_boundary()

        left, top, right, bottom = region
        photo = np.ascontiguousarray(rgb[top:bottom, left:right])
        matte = _matte(photo, model, options.refine, PLANS[options.quality], watch)
        alpha = combine_alpha(matte.alpha, None if own_alpha is None else own_alpha[top:bottom, left:right])
        layer = Layer(matte.foreground(photo, 0, bottom - top, 0, right - left), alpha)
        if region != (0, 0, width, height):  # outside the region everything is background
            whole = Layer(rgb, np.zeros((height, width), np.uint8))
            whole.paste(layer, left, top)
            layer = whole
        watch.lap("matte")
        return MattedPhoto(layer, image.icc_profile, watch.timings_ms, image.dropped_metadata)


def _matte(rgb: np.ndarray, model: SaliencyModel, refine: bool, plan: QualityPlan, watch: _Stopwatch) -> Matte:
    # One box-filtered reduction of the photo serves the model and the refinement's guide.
    preview = model.reduce(rgb)
    prob = predict_map(rgb, model, plan, preview)
    watch.lap("model")
    stage_boundary()
    if refine:
        return refine_matte(rgb, prob, preview=preview)
    return Matte(alpha_from_map(prob, int(rgb.shape[1]), int(rgb.shape[0])))


def _scaled(region: Region, x_factor: float, y_factor: float) -> Region:
    """A region of the photo as sent, in the pixels of its shrunk copy (rounded outwards)."""
    left, top, right, bottom = region
    return (
        int(left * x_factor),
        int(top * y_factor),
        max(int(left * x_factor) + 1, math.ceil(right * x_factor)),
        max(int(top * y_factor) + 1, math.ceil(bottom * y_factor)),
    )


def _cutout(rgb: np.ndarray, matte: Matte, options: RemoveOptions) -> Cutout:
    background = flatten_for_jpeg(options.background) if options.format == "jpeg" else options.background
    region = foreground_box(matte.alpha) if options.crop else None
    return Cutout(rgb, matte.alpha, background, options.mask_only, region, matte.foreground)


def flatten_for_jpeg(background: RGBA | None) -> RGBA:
    """JPEG has no alpha: a missing or translucent background is laid over white."""
    if background is None:
        return WHITE
    red, green, blue, opacity = background
    a = opacity / 255.0
    return (round(red * a + 255 * (1 - a)), round(green * a + 255 * (1 - a)), round(blue * a + 255 * (1 - a)), 255)
