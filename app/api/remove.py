"""``POST /remove``: one image in, its cut-out out."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.api.auth import MeteredCaller
from app.api.deps import State
from app.api.flow import run_for_client
from app.api.upload import FILE_FIELD, read_upload
from app.imaging.color import parse_color
from app.imaging.encode import EncoderSettings
from app.pipeline import Limits, RemoveOptions, remove_background

router = APIRouter()


class Format(str, Enum):
    png = "png"
    webp = "webp"
    jpeg = "jpeg"


class Quality(str, Enum):
    fast = "fast"
    balanced = "balanced"
    best = "best"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"example": {"error": {"code": "...", "message": "..."}}}},
    }


_IMAGE_BODY = {"type": "string", "format": "binary"}
_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "description": "The photo: multipart field `file`, or the raw bytes. The format is read from the bytes.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {FILE_FIELD: _IMAGE_BODY}, "required": [FILE_FIELD]}
            },
            "application/octet-stream": {"schema": _IMAGE_BODY},
            "image/*": {"schema": _IMAGE_BODY},
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The cut-out (or the mask) in the requested format.",
        "content": {media: {"schema": _IMAGE_BODY} for media in ("image/png", "image/webp", "image/jpeg")},
        "headers": {
            "X-Width": {"description": "Width of the returned image in pixels.", "schema": {"type": "integer"}},
            "X-Height": {"description": "Height of the returned image in pixels.", "schema": {"type": "integer"}},
            "X-Processing-Time-Ms": {"description": "Time spent on the image, queueing excluded.", "schema": {"type": "number"}},
            "X-Dropped-Metadata": {
                "description": "Only when some was: `icc`, an ICC profile not carried over (over 1 MB, or not a profile).",
                "schema": {"type": "string"},
            },
        },
    },
    400: _error("Empty body, malformed multipart, or no `file` field."),
    401: _error("No API key (only when API_KEYS is set); a browser is asked for one with a Basic challenge."),
    403: _error("An API key that is not valid."),
    408: _error("The body stalled: silent for UPLOAD_IDLE_SECONDS, or under UPLOAD_MIN_BYTES_PER_SECOND on average."),
    413: _error(
        "Upload larger than MAX_UPLOAD_BYTES, image larger than MAX_PIXELS, a side over 65,535 px (`side_too_long`), "
        "or over 16 MB of metadata (`too_much_metadata`)."
    ),
    415: _error("Not an image this service reads (sniffed from the bytes), or a Content-Type that is not accepted."),
    422: _error(
        "An image that cannot be decoded, or an invalid option; an image that would cost far more than its pixels "
        "(`too_many_scans`, `too_many_segments`, `implausible_tiff`), or an output its format cannot hold "
        "(`output_too_large_for_format`: WebP 16,383 px a side, JPEG 65,500)."
    ),
    429: _error("Rate limit exceeded (RATE_LIMIT_PER_MINUTE); see Retry-After and X-RateLimit-*."),
    503: _error("At capacity, still warming up, or shutting down; see Retry-After."),
}


@router.post(
    "/remove",
    summary="Remove the background of a photo",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_OPENAPI_BODY,
)
async def remove(
    request: Request,
    state: State,
    caller: MeteredCaller,
    format: Annotated[Format, Query(description="Output format. JPEG has no transparency: it is laid on `bg`, white by default.")] = Format.png,
    bg: Annotated[
        str | None,
        Query(description="Background colour to compose on: `#rrggbb`, `#rrggbbaa` (escape `#` as `%23`, or leave it out) or a CSS name."),
    ] = None,
    mask: Annotated[bool, Query(description="Return the 8-bit alpha mask as a grayscale image instead of the cut-out.")] = False,
    crop: Annotated[bool, Query(description="Crop to the subject's bounding box.")] = False,
    refine: Annotated[
        bool | None,
        Query(description="Refine edges against the photo and clean edge colours; the default is the REFINE setting."),
    ] = None,
    model: Annotated[
        str | None,
        Query(description="A loaded model by name (`/healthz` lists them; MODELS sets which); the default is MODEL.", max_length=64),
    ] = None,
    quality: Annotated[
        Quality | None,
        Query(description="`fast`, `balanced` or `best`: more passes for better edges at more CPU; the default is QUALITY."),
    ] = None,
) -> Response:
    settings = state.settings
    options = RemoveOptions(
        format=format.value,
        background=parse_color(bg) if bg is not None else None,
        mask_only=mask,
        crop=crop,
        refine=settings.refine if refine is None else refine,
        quality=settings.quality if quality is None else quality.value,
    )
    chosen = state.model_for(model, options.quality)
    data = await read_upload(request, settings.max_upload_bytes)  # before its place: a slow body holds no worker
    state.check_ready_for_images()
    async with state.runner.slot():
        result = await run_for_client(
            request,
            state.runner,
            remove_background,
            data,
            options,
            chosen,
            Limits.from_settings(settings),
            EncoderSettings.from_settings(settings),
        )
    timings = result.timings_ms
    request.app.state.metrics.observe_image(timings)
    headers = {
        "X-Width": str(result.width),
        "X-Height": str(result.height),
        "X-Processing-Time-Ms": f"{sum(timings.values()):.1f}",
        "Server-Timing": ", ".join(f"{name};dur={ms}" for name, ms in timings.items()),
        **({"X-Dropped-Metadata": ",".join(result.dropped_metadata)} if result.dropped_metadata else {}),
        **caller.headers,
    }
    return Response(content=result.body, media_type=result.media_type, headers=headers)
