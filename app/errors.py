"""The one error type of the service and its JSON shape.

Every failure a client can cause is an ``ApiError`` raised where it is found
and turned into ``{"error": {"code": ..., "message": ...}}`` in one handler.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure the client can act on: a stable ``code``, an HTTP ``status``, a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def empty_input() -> ApiError:
    return ApiError(400, "empty_input", "The request carries no image: send it as multipart field 'file' or as the raw body.")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def upload_too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"The upload is larger than the limit of {limit:,} bytes.")


def too_many_pixels(width: int, height: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "image_too_large",
        f"The image is {width}x{height} ({width * height:,} pixels); the limit is {limit:,} pixels.",
    )


def unsupported_format(detail: str) -> ApiError:
    return ApiError(415, "unsupported_format", detail)


def unreadable_image(detail: str) -> ApiError:
    return ApiError(422, "unreadable_image", f"The image could not be decoded: {detail}")


def invalid_option(message: str) -> ApiError:
    return ApiError(422, "invalid_option", message)


def busy(retry_after_s: int) -> ApiError:
    return ApiError(
        503,
        "busy",
        "The server is at capacity; retry after the number of seconds in Retry-After.",
        headers={"Retry-After": str(retry_after_s)},
    )


def model_unavailable() -> ApiError:
    return ApiError(503, "model_unavailable", "The model failed to start; /healthz says why.", headers={"Retry-After": "30"})


def shutting_down() -> ApiError:
    """Sent while draining after SIGTERM; another replica, or this one restarted, will take it."""
    return ApiError(503, "shutting_down", "The service is shutting down; send the image again.", headers={"Retry-After": "1"})


def too_many_failed_keys(retry_after_s: int) -> ApiError:
    """Sent before any key is compared, so a guesser learns nothing while it waits."""
    return ApiError(
        429,
        "too_many_failed_keys",
        "Too many wrong API keys from this address; retry after the number of seconds in Retry-After.",
        headers={"Retry-After": str(retry_after_s)},
    )


QUOTED_PREFIX = 40  # characters of a client's bad value that an error message repeats


def quoted(text: str) -> str:
    """``text`` as repr() writes it, cut to its first few characters: an error never echoes a whole value back."""
    return repr(text) if len(text) <= QUOTED_PREFIX else repr(text[:QUOTED_PREFIX]) + "..."


def field_too_large(name: str, limit: int) -> ApiError:
    """A form field past its length, refused before it is parsed: a parameter needs a few dozen bytes."""
    return ApiError(413, "field_too_large", f"The field '{name}' is longer than its limit of {limit:,} bytes.")


def too_many_fields(limit: int) -> ApiError:
    return ApiError(413, "too_many_fields", f"The form has more than {limit} fields (or, as JSON, more values).")


def part_headers_too_large(max_headers: int, max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "part_headers_too_large",
        f"A multipart part has more than {max_headers} headers, or a header line over {max_bytes:,} bytes.",
    )


def multipart_boundary_too_long(length: int, limit: int) -> ApiError:
    return ApiError(
        400, "bad_multipart_boundary", f"The multipart boundary is {length:,} bytes long; the limit is {limit}."
    )


# Cost bounds of the decoders (app/imaging/bounds.py): each a few bytes on the wire, far past any real file.


def too_many_scans(limit: int) -> ApiError:
    """Every scan of a progressive JPEG is a pass over all its blocks."""
    return ApiError(422, "too_many_scans", f"The JPEG has more than {limit} scans; real photos have at most about 20.")


def too_many_segments(what: str, limit: int) -> ApiError:
    return ApiError(422, "too_many_segments", f"The image has more than {limit:,} {what}.")


def too_much_metadata(limit: int) -> ApiError:
    return ApiError(413, "too_much_metadata", f"The image carries more than {limit:,} bytes of metadata.")


def side_too_long(width: int, height: int, limit: int) -> ApiError:
    return ApiError(413, "side_too_long", f"The image is {width}x{height}; neither side may exceed {limit:,} pixels.")


def implausible_tiff(detail: str) -> ApiError:
    return ApiError(422, "implausible_tiff", f"The TIFF's layout does not fit its size: {detail}.")


def output_too_large_for_format(fmt: str, width: int, height: int, limit: int) -> ApiError:
    return ApiError(
        422,
        "output_too_large_for_format",
        f"{fmt} holds at most {limit:,} px a side; this output is {width}x{height}. Use format=png.",
    )


# A request's flow (app/api/flow.py): a body that stalls, and a client that leaves before its answer.


def upload_timeout(idle_seconds: float) -> ApiError:
    """Also after ``100 Continue``: a body that does not come holds a connection and its memory for nothing."""
    return ApiError(408, "request_timeout", f"No bytes of the body arrived for {idle_seconds:g} s; the connection is closed.")


def upload_too_slow(min_bytes_per_second: float) -> ApiError:
    return ApiError(
        408,
        "upload_too_slow",
        f"The body arrived slower than {min_bytes_per_second:,.0f} bytes/s on average; the connection is closed.",
    )


def client_closed_request() -> ApiError:
    """What the log records for a client that left while its image waited or was cut out: the work was stopped."""
    return ApiError(499, "client_closed_request", "The client closed the connection before its answer; the work was stopped.")


# The HTTP layer's refusals (app/protocol.py), written before the app sees a request; each closes the connection.


def header_timeout(seconds: float) -> ApiError:
    return ApiError(408, "header_timeout", f"The request line and headers did not arrive within {seconds:g} s.")


def headers_too_large(max_bytes: int, max_fields: int) -> ApiError:
    return ApiError(
        431,
        "headers_too_large",
        f"The request line and headers are over {max_bytes:,} bytes, or more than {max_fields} fields.",
    )


def malformed_request() -> ApiError:
    return ApiError(400, "malformed_request", "The request is not valid HTTP/1.1.")


def too_many_connections() -> ApiError:
    return ApiError(
        503,
        "too_many_connections",
        "The server holds as many connections as it may, all busy; retry after the seconds in Retry-After.",
        headers={"Retry-After": "1"},
    )
