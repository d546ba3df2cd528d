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
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header

from app import errors
from app.api.auth import KeyHolder, MeteredCaller, rate_limit_headers
from app.api.deps import State
from app.api.upload import read_body, read_multipart_fields
from app.compat.removebg import RemoveBgResult, remove_background_as_removebg
from app.compat.removebg_options import RemoveBgOptions, parse_options
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
    async with state.runner.slot():
        form = await _read_form(request, settings.max_upload_bytes)
        options = parse_options(form.fields)
        policy = FetchPolicy.from_allow_list(
            settings.image_url_allow, settings.max_upload_bytes, settings.image_url_timeout_seconds
        )
        image = await _image(form, SOURCES, policy, settings.max_upload_bytes, required=True)
        background = await _image(form, BACKGROUNDS[1:], policy, settings.max_upload_bytes, required=False)
        result = await state.runner.run(
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


async def _read_form(request: Request, max_bytes: int) -> RemoveBgForm:
    """The fields of a multipart, urlencoded or JSON body, all in memory, within the size limits."""
    mime, _ = parse_options_header(request.headers.get("content-type"))
    mime = mime.lower()
    part_limit = _b64_limit(max_bytes)
    total_limit = 2 * part_limit + 64 * 1024  # a photo and a background photo, and the small fields
    form = RemoveBgForm()
    if mime == b"multipart/form-data":
        for name, value in (await read_multipart_fields(request, FIELDS, part_limit, total_limit)).items():
            if name in FILE_FIELDS:
                form.files[name] = value
            else:
                form.fields[name] = _text(name, value)
        return form
    if mime == b"application/x-www-form-urlencoded":
        body = _text("body", await read_body(request, total_limit))
        pairs = parse_qsl(body, keep_blank_values=True)
    elif mime == b"application/json":
        pairs = _json_pairs(await read_body(request, total_limit))
    else:
        raise errors.ApiError(
            415,
            "unsupported_media_type",
            "Send the parameters as multipart/form-data, application/x-www-form-urlencoded or application/json.",
        )
    for name, value in pairs:
        if name in FILE_FIELDS and value:
            raise errors.invalid_option(
                f"{name} must be uploaded as multipart/form-data; send {name}_b64 or a URL otherwise."
            )
        if name in FIELDS:
            form.fields.setdefault(name, value)
    return form


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.invalid_option(f"{name} is not UTF-8 text.") from None


def _json_pairs(body: bytes) -> list[tuple[str, str]]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise errors.bad_request("The body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise errors.bad_request("The JSON body must be an object of parameters.")
    pairs: list[tuple[str, str]] = []
    for name, value in document.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif isinstance(value, (str, int, float)):
            pairs.append((name, str(value)))
        elif name in FIELDS:
            raise errors.invalid_option(f"{name} must be a string, number or boolean.")
    return pairs


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
        data = _from_base64(name, form.fields[name])
    else:
        data = await asyncio.to_thread(fetch_image, form.fields[name], policy, name)
    if len(data) > max_bytes:
        raise errors.upload_too_large(max_bytes)
    return data


def _from_base64(name: str, text: str) -> bytes:
    """Standard or URL-safe base64, wrapped or not, padded or not, with or without a ``data:`` prefix."""
    payload = text.strip()
    if payload.startswith("data:") and "," in payload:
        payload = payload.split(",", 1)[1]
    payload = "".join(payload.split()).replace("-", "+").replace("_", "/")
    payload += "=" * (-len(payload) % 4)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise errors.invalid_option(f"{name} is not valid base64.") from None
    if not data:
        raise errors.empty_input()
    return data
