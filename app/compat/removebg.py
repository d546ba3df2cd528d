"""One remove.bg v1.0 request on our pipeline: matte, lay out, encode.

The photo is shrunk to the requested size before the model sees it
(``matte_photo``), then the cut-out is laid out as remove.bg's parameters say
(crop with margins, or scale and position on the canvas; a drop shadow; a
background colour or photo) and encoded as PNG, JPEG, WebP or remove.bg's ZIP
(``color.jpg`` + ``alpha.png``). Synchronous, like the pipeline: the router runs
it on the worker pool.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np

from app import errors
from app.compat.removebg_options import RemoveBgOptions
from app.imaging.decode import decode_image
from app.imaging.encode import WHITE, Cutout, EncoderSettings, OutputFormat, Region, encode, foreground_box
from app.imaging.layout import Layer, crop_with_margins, drop_shadow, over_photo, place_subject
from app.model import SaliencyModel
from app.pipeline import Limits, MatteOptions, flatten_for_jpeg, matte_photo
from app.runner import stage_boundary

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "zip": "application/zip"}
_ENCODINGS: dict[str, OutputFormat] = {"png": "png", "jpg": "jpeg", "webp": "webp"}  # remove.bg's names -> ours
_DEFAULT_LIMITS, _DEFAULT_ENCODER = Limits(), EncoderSettings()  # both frozen: one shared default each


@dataclass
class RemoveBgResult:
    body: bytes
    media_type: str
    width: int
    height: int
    foreground: Region  # left, top, right, bottom of the subject in the result
    timings_ms: dict[str, float] = field(default_factory=dict)
    dropped_metadata: tuple[str, ...] = ()  # of the photo's, not carried into the result: ("icc",)


def unknown_foreground() -> errors.ApiError:
    return errors.ApiError(
        400, "unknown_foreground", "Could not identify foreground in image: nothing in it stands out as a subject."
    )


def remove_background_as_removebg(
    image: bytes,
    background: bytes | None,
    options: RemoveBgOptions,
    model: SaliencyModel,
    refine: bool,
    limits: Limits = _DEFAULT_LIMITS,
    encoder: EncoderSettings = _DEFAULT_ENCODER,
    quality: str = "balanced",
) -> RemoveBgResult:
    matted = matte_photo(
        image,
        MatteOptions(refine=refine, quality=quality, max_pixels=options.max_pixels, region=options.roi),
        model,
        limits,
    )
    timings, icc_profile, layer, dropped = matted.timings_ms, matted.icc_profile, matted.layer, matted.dropped_metadata
    del matted  # each stage below makes a new canvas: hold the one before it no longer than needed
    stage_boundary()
    started = time.perf_counter()
    layer, subject = _laid_out(layer, options)
    on_photo = background is not None
    if background is not None:
        backdrop = decode_image(background, limits.max_pixels).rgb  # decoded even for channels=alpha: checked
        if options.channels == "rgba":
            layer = over_photo(layer, backdrop)  # its cost is the canvas's pixels, whatever the backdrop's aspect
        del backdrop
    lap = time.perf_counter()
    timings["compose"] = round((lap - started) * 1000.0, 1)

    stage_boundary()
    fmt = _format(options, layer, on_photo)
    if fmt == "zip":
        body = _zip(layer, options.bg_color, encoder)
    elif options.channels == "alpha":
        body = encode(Cutout(layer.rgb, layer.alpha, mask_only=True), _ENCODINGS[fmt], encoder)
    else:
        colour = WHITE if on_photo else options.bg_color  # on a photo all is opaque: encode RGB
        colour = flatten_for_jpeg(colour) if fmt == "jpg" else colour
        body = encode(Cutout(layer.rgb, layer.alpha, colour), _ENCODINGS[fmt], encoder, icc_profile)
    timings["encode"] = round((time.perf_counter() - lap) * 1000.0, 1)
    return RemoveBgResult(body, MEDIA_TYPES[fmt], layer.width, layer.height, subject, timings, dropped)


def _laid_out(layer: Layer, options: RemoveBgOptions) -> tuple[Layer, Region]:
    """The canvas the parameters ask for, and where the subject is on it."""
    box = foreground_box(layer.alpha)
    if box is None:
        raise unknown_foreground()
    if options.crop:
        width, height = box[2] - box[0], box[3] - box[1]
        top, right, bottom, left = options.crop_margin
        margins = (top.resolve(height), right.resolve(width), bottom.resolve(height), left.resolve(width))
        layer = crop_with_margins(layer, box, margins)
        box = (margins[3], margins[0], margins[3] + width, margins[0] + height)
    elif options.scale is not None or options.position is not None:
        layer, box = place_subject(layer, box, options.scale, options.position)
        box = (max(0, box[0]), max(0, box[1]), min(layer.width, box[2]), min(layer.height, box[3]))
    if options.add_shadow:
        layer = drop_shadow(layer, box)
    return layer, box


def _format(options: RemoveBgOptions, layer: Layer, on_photo: bool) -> str:
    """``auto``: PNG when the result has transparency, JPEG when it has none."""
    if options.format != "auto":
        return options.format
    if options.channels == "alpha":
        return "png"
    opaque = on_photo or (options.bg_color is not None and options.bg_color[3] == 255) or int(layer.alpha.min()) == 255
    return "jpg" if opaque else "png"


def _zip(layer: Layer, bg_color: tuple[int, int, int, int] | None, encoder: EncoderSettings) -> bytes:
    """remove.bg's ZIP: the colours as ``color.jpg`` and the alpha matte as ``alpha.png``, to be joined by the client.

    Where the alpha is 0 the colours are blanked, so the removed background is not in the file;
    an opaque ``bg_color`` is composed in, and then the matte is all opaque.
    """
    if bg_color is not None and bg_color[3] == 255:
        colour = Cutout(layer.rgb, layer.alpha, bg_color).pixels()
        alpha = np.full_like(layer.alpha, 255)
    else:
        colour = np.where(layer.alpha[:, :, None] > 0, layer.rgb, np.uint8(0))
        alpha = layer.alpha
    color_jpg = encode(Cutout(colour, np.full_like(alpha, 255), WHITE), "jpeg", encoder)
    alpha_png = encode(Cutout(colour, alpha, mask_only=True), "png", encoder)
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # both are compressed already
        archive.writestr("color.jpg", color_jpg)
        archive.writestr("alpha.png", alpha_png)
    return buffer.getvalue()
