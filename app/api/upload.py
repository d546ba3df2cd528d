"""Read the uploaded image into memory, from multipart or a raw body, within the size limit.

Starlette's form parser spools uploads over 1 MB to temporary files; we
stream the multipart body through python-multipart ourselves and keep only
the parts we asked for (``file`` for ``/remove``), in memory, stopping as soon
as a limit is passed: each kept field has its own length, checked as its bytes
arrive, and the number of parts and the size of their headers are capped, so
no body costs more than its declared limits however it is cut up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app import errors

FILE_FIELD = "file"
MAX_FORM_FIELDS = 64  # parts of a multipart body (or pairs, members of the other forms): a form needs a dozen
MAX_BOUNDARY_BYTES = 256  # python-multipart's own limit; RFC 2046 allows 70, a few clients send more
MAX_PART_HEADERS = 8  # a part needs two, Content-Disposition and Content-Type (python-multipart's default)
MAX_PART_HEADER_BYTES = 4 * 1024  # one header line of a part; a long file name fits
_MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small fields around the file
_RAW_TYPES = (b"", b"application/octet-stream")


@dataclass(frozen=True)
class FieldLimits:
    """The longest value of each field a form may keep, in bytes; fields not named are skipped, but counted.

    Past its length an image field is refused as the upload too large that clients know; any other field
    as ``field_too_large``, naming it.
    """

    images: Mapping[str, int]
    texts: Mapping[str, int]
    max_upload_bytes: int

    def limit(self, name: str) -> int | None:
        return self.images.get(name, self.texts.get(name))

    def too_long(self, name: str) -> errors.ApiError:
        if name in self.images:
            return errors.upload_too_large(self.max_upload_bytes)
        return errors.field_too_large(name, self.texts[name])


async def read_upload(request: Request, max_bytes: int) -> bytes:
    mime, _ = parse_options_header(request.headers.get("content-type"))
    mime = mime.lower()
    declared = request.headers.get("content-length", "")
    if mime == b"multipart/form-data":
        if declared.isdigit() and int(declared) > max_bytes + _MULTIPART_OVERHEAD:
            raise errors.upload_too_large(max_bytes)
        data = await _read_multipart(request, max_bytes)
    elif mime in _RAW_TYPES or mime.startswith(b"image/"):
        if declared.isdigit() and int(declared) > max_bytes:
            raise errors.upload_too_large(max_bytes)
        data = await _read_raw(request, max_bytes)
    else:
        raise errors.ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {errors.quoted(mime.decode('latin-1'))} is not accepted: send multipart/form-data with "
            "the image in field 'file', or the raw image bytes as image/* or application/octet-stream.",
        )
    if not data:
        raise errors.empty_input()
    return data


async def _read_raw(request: Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise errors.upload_too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise errors.bad_request("The client disconnected before the upload finished.") from None
    return b"".join(chunks)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_bytes``, declared or counted."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise errors.upload_too_large(max_bytes)
    return await _read_raw(request, max_bytes)


class _Parts:
    """python-multipart callbacks that keep the bytes of the named fields only (the first of each name).

    Every limit is checked in the callback that sees the bytes, so a refusal comes before the rest is parsed;
    the parser itself caps each part's headers.
    """

    def __init__(self, limits: FieldLimits) -> None:
        self.limits = limits
        self.fields: dict[str, bytearray] = {}
        self._parts = 0
        self._header_name = b""
        self._header_value = b""
        self._name = ""
        self._limit = 0
        self._current: bytearray | None = None

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FORM_FIELDS:
            raise errors.too_many_fields(MAX_FORM_FIELDS)
        self._current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]  # python-multipart caps a header line: no quadratic growth

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            name = params.get(b"name", b"").decode("utf-8", "replace")
            limit = self.limits.limit(name)
            if limit is not None and name not in self.fields:
                self._name, self._limit = name, limit
                self._current = self.fields[name] = bytearray()
        self._header_name = self._header_value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        if len(self._current) + (end - start) > self._limit:
            raise self.limits.too_long(self._name)
        self._current += data[start:end]

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_part_data": self.on_part_data,
        }


async def _read_multipart(request: Request, max_bytes: int) -> bytes:
    limits = FieldLimits(images={FILE_FIELD: max_bytes}, texts={}, max_upload_bytes=max_bytes)
    fields = await read_multipart_fields(request, limits, max_bytes + _MULTIPART_OVERHEAD)
    if FILE_FIELD not in fields:
        raise errors.bad_request(
            f"The multipart body has no field named '{FILE_FIELD}': send the image as -F {FILE_FIELD}=@photo.jpg."
        )
    return fields[FILE_FIELD]


async def read_multipart_fields(request: Request, limits: FieldLimits, max_total_bytes: int) -> dict[str, bytes]:
    """The fields of a multipart body that ``limits`` names, in memory, each within its length, all within
    ``max_total_bytes``.

    Parsed on the event loop as the chunks arrive: python-multipart finds the boundaries with C searches, and
    the limits on parts and their headers keep the Python work per chunk small.
    """
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise errors.bad_request("The multipart Content-Type has no boundary.")
    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise errors.multipart_boundary_too_long(len(boundary), MAX_BOUNDARY_BYTES)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_total_bytes:
        raise errors.upload_too_large(limits.max_upload_bytes)
    part = _Parts(limits)
    total = 0
    try:
        parser = MultipartParser(
            boundary,
            part.callbacks(),  # type: ignore[arg-type]
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_BYTES,
        )
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_total_bytes:
                raise errors.upload_too_large(limits.max_upload_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        if str(error).startswith("Maximum header"):  # python-multipart's caps on a part's headers
            raise errors.part_headers_too_large(MAX_PART_HEADERS, MAX_PART_HEADER_BYTES) from None
        raise errors.bad_request("The multipart body is malformed.") from None
    except ClientDisconnect:
        raise errors.bad_request("The client disconnected before the upload finished.") from None
    return {name: bytes(data) for name, data in part.fields.items()}
