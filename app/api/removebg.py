"""remove.bg's v1.0 API: ``POST /v1.0/removebg`` and ``GET /v1.0/account``, on our own pipeline.

Existing remove.bg clients switch by changing the base URL. Their errors come
in remove.bg's shape, ``{"errors": [{"title", "code", "detail"}]}``, with its
status codes; that mapping lives here, in this router's route class, so the rest
of the service (and ``app/errors.py``) keeps one error type and one shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header

from app import errors
from app.api.auth import KeyHolder, MeteredCaller, rate_limit_headers
from app.api.deps import State
from app.api.flow import run_for_client
from app.api.upload import MAX_FORM_FIELDS, FieldLimits, read_body, read_multipart_fields
from app.compat.removebg import RemoveBgResult, remove_background_as_removebg
from app.compat.removebg_options import MAX_PARAMETER_BYTES, RemoveBgOptions, parse_options
from app.imaging.encode import EncoderSettings
from app.pipeline import Limits
from app.runner import QueueFull
from app.url_fetch import FetchPolicy, fetch_image

SOURCES = ("image_file", "image_file_b64", "image_url")
BACKGROUNDS = ("bg_color", "bg_image_file", "bg_image_url")
FILE_FIELDS = frozenset({"image_file", "bg_image_file"})
PARAMETERS = frozenset(
    {
        "size",
        "type",
        "type_level",
        "format",
        "roi",
        "crop",
        "crop_margin",
        "scale",
        "position",
        "channels",
        "add_shadow",
        "semitransparency",
    }
)
FIELDS = FILE_FIELDS | PARAMETERS | {"image_file_b64", "image_url", "bg_color", "bg_image_url"}
MAX_URL_BYTES = 8 * 1024  # image_url, bg_image_url: far past any real address, far short of a body
_SMALL_FIELDS_BYTES = 64 * 1024  # boundaries, part headers and the small fields around the images
_MAX_RAW_NAME_BYTES = 256  # a urlencoded name longer than this, escaped, is none of ours: skipped unread
_MAX_JSON_PUNCTUATION = 64 * 1024  # commas and brackets in a JSON body: bounds the values json.loads makes
_B64_PIECE = 4 * 1024 * 1024  # base64 decoded this many characters (a multiple of 4) at a time
_UNESCAPE_PIECE = 64 * 1024  # urlencoded values unescaped this many bytes at a time
UNMETERED_CREDITS = 1_000_000  # what /v1.0/account reports: nothing is charged here, so the balance never moves

# Our statuses and codes as remove.bg's clients expect them: it answers 400 for every bad
# request or unreadable image, and 403 for a missing key as for a wrong one.
_STATUS = {401: 403, 404: 400, 415: 400, 422: 400}
_CODES = {
    "unauthorized": "auth_failed",
    "forbidden": "auth_failed",
    "rate_limited": "rate_limit_exceeded",
    "invalid_option": "invalid_parameter",
}


def removebg_error(error: errors.ApiError) -> JSONResponse:
    status = _STATUS.get(error.status, error.status)
    code = _CODES.get(error.code, error.code)
    body = {"errors": [{"title": error.message, "code": code, "detail": error.message}]}
    return JSONResponse(body, status_code=status, headers=error.headers)


class RemoveBgRoute(APIRoute):
    """Every failure on these routes, from the key check to the encoder, answered in remove.bg's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_as_removebg(request: Request) -> Response:
            try:
                return await handle(request)
            except errors.ApiError as error:
                failure = error
            except QueueFull as full:
                failure = errors.busy(full.retry_after_s)
            except RequestValidationError as invalid:
                failure = errors.invalid_option(
                    "; ".join(str(problem.get("msg", "")) for problem in invalid.errors()) or "invalid request"
                )
            request.app.state.metrics.rejected.labels(failure.code).inc()
            response = removebg_error(failure)
            for name, value in rate_limit_headers(request).items():
                response.headers.setdefault(name, value)
            return response

        return handle_as_removebg


router = APIRouter(prefix="/v1.0", route_class=RemoveBgRoute, tags=["remove.bg compatible"])


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "title": {"type": "string"},
                                    "code": {"type": "string"},
                                    "detail": {"type": "string"},
                                },
                                "required": ["title"],
                            },
                        }
                    },
                    "required": ["errors"],
                }
            }
        },
    }


_BINARY = {"type": "string", "format": "binary"}
_TEXT = {"type": "string"}
_PARAMETER_SCHEMA = {
    "image_url": {**_TEXT, "description": "Fetched by the server only where IMAGE_URL_ALLOW allows it."},
    "image_file_b64": {**_TEXT, "description": "The image, base64-encoded."},
    "size": {
        **_TEXT,
        "description": "preview (default), small, regular (0.25 MP), medium (1.5 MP), hd (4 MP), full, 4k, auto (the photo's own).",
    },
    "type": {**_TEXT, "description": "auto, person, product, animal, car, ...: echoed in X-Type (auto reports other)."},
    "type_level": {**_TEXT, "description": "none, latest, 1, 2: accepted, no effect."},
    "format": {
        **_TEXT,
        "description": "auto (PNG with transparency, else JPEG), png, jpg, webp, zip (color.jpg + alpha.png).",
    },
    "roi": {**_TEXT, "description": "x1 y1 x2 y2, in px or %: only here can be subject."},
    "crop": {**_TEXT, "description": "true: crop to the subject."},
    "crop_margin": {**_TEXT, "description": "1, 2 or 4 values in px or %, each capped at 500 px or 50 %."},
    "scale": {**_TEXT, "description": "original, or 10% to 100% of the canvas."},
    "position": {**_TEXT, "description": "original, center, or 'x% y%'."},
    "channels": {**_TEXT, "description": "rgba (default) or alpha (the mask)."},
    "add_shadow": {**_TEXT, "description": "true: a soft drop shadow under the subject."},
    "semitransparency": {**_TEXT, "description": "Accepted; no effect here."},
    "bg_color": {**_TEXT, "description": "Hex (3, 4, 6 or 8 digits, # optional) or a colour name."},
    "bg_image_url": {**_TEXT, "description": "A background photo, fetched like image_url."},
}
_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "description": "Exactly one of image_file, image_file_b64, image_url; the other fields are optional.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image_file": _BINARY, "bg_image_file": _BINARY, **_PARAMETER_SCHEMA},
                }
            },
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": _PARAMETER_SCHEMA}},
            "application/json": {"schema": {"type": "object", "properties": _PARAMETER_SCHEMA}},
        },
    }
}
_RESULT_JSON = {
    "type": "object",
    "properties": {
        "data": {
            "type": "object",
            "properties": {
                "result_b64": {"type": "string"},
                "foreground_type": {"type": "string"},
                "foreground_top": {"type": "integer"},
                "foreground_left": {"type": "integer"},
                "foreground_width": {"type": "integer"},
                "foreground_height": {"type": "integer"},
            },
        }
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The result, or with `Accept: application/json` the result base64-encoded with the subject's box.",
        "content": {
            **{media: {"schema": _BINARY} for media in ("image/png", "image/jpeg", "image/webp", "application/zip")},
            "application/json": {"schema": _RESULT_JSON},
        },
    },
    400: _error_response("Invalid parameters, or an image that cannot be used."),
    403: _error_response("API key missing or invalid (when API_KEYS is set)."),
    408: _error_response("The body stalled: silent for UPLOAD_IDLE_SECONDS, or under UPLOAD_MIN_BYTES_PER_SECOND."),
    413: _error_response("Upload larger than MAX_UPLOAD_BYTES, or image larger than MAX_PIXELS."),
    429: _error_response("Rate limit exceeded; see Retry-After and X-RateLimit-*."),
    503: _error_response("At capacity, warming up, or shutting down; see Retry-After."),
}


@dataclass
class RemoveBgForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


@router.post(
    "/removebg",
    summary="Remove the background (remove.bg v1.0 compatible)",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_OPENAPI_BODY,
)
async def removebg(request: Request, state: State, caller: MeteredCaller) -> Response:
    settings = state.settings
    state.check_ready_for_images()
    form = await _read_form(request, settings.max_upload_bytes)  # before its place: a slow body holds no worker
    options = parse_options(form.fields)
    state.check_ready_for_images()
    async with state.runner.slot():  # the image_url downloads are bounded by the places, as the jobs are
        policy = FetchPolicy.from_allow_list(
            settings.image_url_allow, settings.max_upload_bytes, settings.image_url_timeout_seconds
        )
        image = await _image(form, SOURCES, policy, settings.max_upload_bytes, required=True)
        background = await _image(form, BACKGROUNDS[1:], policy, settings.max_upload_bytes, required=False)
        result = await run_for_client(
            request,
            state.runner,
            remove_background_as_removebg,
            image,
            background,
            options,
            state.model,
            settings.refine,
            Limits.from_settings(settings),
            EncoderSettings.from_settings(settings),
            settings.quality,
        )
    request.app.state.metrics.observe_image(result.timings_ms)
    headers = {**_result_headers(result, options), **caller.headers}
    if "application/json" in request.headers.get("accept", "").lower():
        return JSONResponse(_result_json(result, options), headers=headers)
    return Response(content=result.body, media_type=result.media_type, headers=headers)


@router.get(
    "/account",
    summary="Account balance (remove.bg v1.0 compatible; nothing is ever charged)",
    responses={
        200: {"description": "A fixed, never-decreasing balance, so clients that check one carry on."},
        403: _error_response("API key missing or invalid (when API_KEYS is set)."),
    },
)
async def account(caller: KeyHolder) -> JSONResponse:
    credits = {"total": UNMETERED_CREDITS, "subscription": UNMETERED_CREDITS, "payg": 0, "enterprise": 0}
    return JSONResponse(
        {"data": {"attributes": {"credits": credits, "api": {"free_calls": UNMETERED_CREDITS, "sizes": "all"}}}}
    )


def _result_headers(result: RemoveBgResult, options: RemoveBgOptions) -> dict[str, str]:
    left, top, right, bottom = result.foreground
    timings = result.timings_ms
    return {
        "X-Type": options.reported_type,
        "X-Width": str(result.width),
        "X-Height": str(result.height),
        "X-Foreground-Top": str(top),
        "X-Foreground-Left": str(left),
        "X-Foreground-Width": str(right - left),
        "X-Foreground-Height": str(bottom - top),
        "X-Credits-Charged": "0",
        "X-Processing-Time-Ms": f"{sum(timings.values()):.1f}",
        "Server-Timing": ", ".join(f"{name};dur={ms}" for name, ms in timings.items()),
        **({"X-Dropped-Metadata": ",".join(result.dropped_metadata)} if result.dropped_metadata else {}),
    }


def _result_json(result: RemoveBgResult, options: RemoveBgOptions) -> dict[str, Any]:
    left, top, right, bottom = result.foreground
    return {
        "data": {
            "result_b64": base64.b64encode(result.body).decode("ascii"),
            "foreground_type": options.reported_type,
            "foreground_top": top,
            "foreground_left": left,
            "foreground_width": right - left,
            "foreground_height": bottom - top,
        }
    }


def _b64_limit(max_bytes: int) -> int:
    """The longest base64 text of ``max_bytes`` bytes, with room for line breaks (MIME wraps at 76)."""
    encoded = 4 * math.ceil(max_bytes / 3)
    return encoded + encoded // 38 + 1024


def _field_limits(max_bytes: int) -> FieldLimits:
    """Each field's longest value: an image file ``max_bytes``, its base64 text ``_b64_limit``, a URL 8 KiB,
    and every other parameter ``MAX_PARAMETER_BYTES``: a form field is refused past these before it is parsed."""
    texts = {name: MAX_PARAMETER_BYTES for name in PARAMETERS | {"bg_color"}}
    texts |= {name: MAX_URL_BYTES for name in ("image_url", "bg_image_url")}
    images = {name: max_bytes for name in FILE_FIELDS} | {"image_file_b64": _b64_limit(max_bytes)}
    return FieldLimits(images=images, texts=texts, max_upload_bytes=max_bytes)


def multipart_body_limit(max_bytes: int) -> int:
    """A multipart body carries at most a photo and a background photo, each within ``max_bytes``, and small fields."""
    return 2 * max_bytes + _SMALL_FIELDS_BYTES


def text_body_limit(max_bytes: int) -> int:
    """A urlencoded or JSON body carries at most one image, as base64 (4/3 of ``max_bytes``); the 3/2 leaves room
    for its line breaks and escapes (``%2B``, ``\\/``) on top, and small fields."""
    return 3 * max_bytes // 2 + _SMALL_FIELDS_BYTES


async def _read_form(request: Request, max_bytes: int) -> RemoveBgForm:
    """The fields of a multipart, urlencoded or JSON body, all in memory, within the size limits.

    Each field is length-capped before its value is parsed, and whatever can be large (text decoding,
    unescaping, JSON) is parsed in a thread, off the event loop.
    """
    mime, _ = parse_options_header(request.headers.get("content-type"))
    mime = mime.lower()
    limits = _field_limits(max_bytes)
    form = RemoveBgForm()
    if mime == b"multipart/form-data":
        parts = await read_multipart_fields(request, limits, multipart_body_limit(max_bytes))
        form.files = {name: value for name, value in parts.items() if name in FILE_FIELDS}
        texts = {name: value for name, value in parts.items() if name not in FILE_FIELDS}
        form.fields = await asyncio.to_thread(_texts, texts)
        return form
    if mime == b"application/x-www-form-urlencoded":
        body = await read_body(request, text_body_limit(max_bytes))
        form.fields = await asyncio.to_thread(_urlencoded_fields, body, limits)
    elif mime == b"application/json":
        body = await read_body(request, text_body_limit(max_bytes))
        form.fields = await asyncio.to_thread(_json_fields, body, limits)
    else:
        raise errors.ApiError(
            415,
            "unsupported_media_type",
            "Send the parameters as multipart/form-data, application/x-www-form-urlencoded or application/json.",
        )
    return form


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.invalid_option(f"{name} is not UTF-8 text.") from None


def _texts(parts: dict[str, bytes]) -> dict[str, str]:
    return {name: _text(name, value) for name, value in parts.items()}


def _urlencoded_fields(body: bytes, limits: FieldLimits) -> dict[str, str]:
    """The first value of each field ``limits`` names, as ``parse_qsl`` reads them.

    Each value's length is checked where it lies in the body, before it is copied or unescaped (an escape is
    three bytes, so the raw value may be up to three times its limit): a huge value costs a search, not a copy.
    """
    pairs = body.count(b"&") + 1
    if pairs > MAX_FORM_FIELDS:
        raise errors.too_many_fields(MAX_FORM_FIELDS)
    fields: dict[str, str] = {}
    start = 0
    for _ in range(pairs):
        end = body.find(b"&", start)
        end = len(body) if end < 0 else end
        equals = body.find(b"=", start, end)
        name_end, value_start = (end, end) if equals < 0 else (equals, equals + 1)
        pair_start, start = start, end + 1
        if end == pair_start or name_end - pair_start > _MAX_RAW_NAME_BYTES:
            continue  # empty, or a name longer than any of ours
        name = _unescape(body[pair_start:name_end]).decode("utf-8", "replace")
        if name in FILE_FIELDS and end > value_start:
            raise errors.invalid_option(
                f"{name} must be uploaded as multipart/form-data; send {name}_b64 or a URL otherwise."
            )
        limit = limits.limit(name)
        if limit is None or name in fields:
            continue
        if end - value_start > 3 * limit:
            raise limits.too_long(name)
        value = _unescape(body[value_start:end])
        if len(value) > limit:
            raise limits.too_long(name)
        fields[name] = _text(name, value)
    return fields


def _unescape(raw: bytes) -> bytes:
    """``+`` and ``%XX`` undone, in pieces: ``unquote_to_bytes`` splits at every ``%``, so a value of nothing but
    escapes would otherwise become one list of millions of small objects, built in one call that holds the GIL."""
    raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    pieces: list[bytes] = []
    start = 0
    while start < len(raw):
        end = min(start + _UNESCAPE_PIECE, len(raw))
        straddling = raw.rfind(b"%", end - 2, end) if end < len(raw) else -1
        end = straddling if straddling > start else end  # an escape cut in two: end the piece before it
        pieces.append(unquote_to_bytes(raw[start:end]))
        start = end
    return b"".join(pieces)


def _json_fields(body: bytes, limits: FieldLimits) -> dict[str, str]:
    """The fields ``limits`` names of a JSON object, each within its length.

    Before parsing, the punctuation is counted: every JSON value past the first in an array or object needs a
    comma, every array or object a bracket, so this bounds how many Python objects ``json.loads`` can make from
    one body, whatever its size (a form of small fields needs a few dozen).
    """
    if body.count(b",") + body.count(b"[") + body.count(b"{") > _MAX_JSON_PUNCTUATION:
        raise errors.too_many_fields(MAX_FORM_FIELDS)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise errors.bad_request("The body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise errors.bad_request("The JSON body must be an object of parameters.")
    if len(document) > MAX_FORM_FIELDS:
        raise errors.too_many_fields(MAX_FORM_FIELDS)
    fields: dict[str, str] = {}
    for name, value in document.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        elif name in FIELDS:
            raise errors.invalid_option(f"{name} must be a string, number or boolean.")
        else:
            continue
        if name in FILE_FIELDS and text:
            raise errors.invalid_option(
                f"{name} must be uploaded as multipart/form-data; send {name}_b64 or a URL otherwise."
            )
        limit = limits.limit(name)
        if limit is None:
            continue
        if len(text) > limit or len(text.encode("utf-8")) > limit:
            raise limits.too_long(name)
        fields[name] = text
    return fields


async def _image(
    form: RemoveBgForm, sources: tuple[str, ...], policy: FetchPolicy, max_bytes: int, required: bool
) -> bytes | None:
    """The bytes of the one image source the form gives among ``sources``."""
    given = [name for name in sources if form.files.get(name) or form.fields.get(name, "").strip()]
    if required and not given:
        raise errors.ApiError(
            400, "missing_source", "No image given: send one of image_file, image_file_b64 or image_url."
        )
    if len(given) > 1:
        raise errors.invalid_option(f"Give only one of {', '.join(given)}.")
    if not required and form.fields.get("bg_color", "").strip() and given:
        raise errors.invalid_option(f"Give only one of bg_color, {given[0]}.")
    if not given:
        return None
    name = given[0]
    if name in FILE_FIELDS:
        data = form.files[name]
    elif name.endswith("_b64"):
        data = await asyncio.to_thread(_from_base64, name, form.fields[name])
    else:
        data = await asyncio.to_thread(fetch_image, form.fields[name], policy, name)
    if len(data) > max_bytes:
        raise errors.upload_too_large(max_bytes)
    return data


def _from_base64(name: str, text: str) -> bytes:
    """Standard or URL-safe base64, wrapped or not, padded or not, with or without a ``data:`` prefix.

    Run in a thread: a photo's base64 is tens of megabytes.
    """
    payload = text.strip()
    if payload.startswith("data:") and "," in payload:
        payload = payload.split(",", 1)[1]
    payload = "".join(payload.split()).replace("-", "+").replace("_", "/")
    payload += "=" * (-len(payload) % 4)
    try:  # in pieces, so that no one call holds the GIL (and the event loop) for long
        data = b"".join(
            base64.b64decode(payload[start : start + _B64_PIECE], validate=True)
            for start in range(0, len(payload), _B64_PIECE)
        )
    except (binascii.Error, ValueError):
        raise errors.invalid_option(f"{name} is not valid base64.") from None
    if not data:
        raise errors.empty_input()
    return data
