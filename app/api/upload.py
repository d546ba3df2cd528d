"""Read the uploaded image into memory, from multipart or a raw body, within the size limit.

Starlette's form parser spools uploads over 1 MB to temporary files; we
stream the multipart body through python-multipart ourselves and keep only
the parts we asked for (``file`` for ``/remove``), in memory, stopping as soon
as a limit is passed.
"""

from __future__ import annotations

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app import errors

FILE_FIELD = "file"
_MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small fields around the file
_RAW_TYPES = (b"", b"application/octet-stream")


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
            f"Content-Type {mime.decode('latin-1')!r} is not accepted: send multipart/form-data with the image "
            "in field 'file', or the raw image bytes as image/* or application/octet-stream.",
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
    """The whole body, refused with 413 as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise errors.upload_too_large(max_bytes)
    return await _read_raw(request, max_bytes)


class _Parts:
    """python-multipart callbacks that keep the bytes of the named fields only (the first of each name)."""

    def __init__(self, names: frozenset[str], max_bytes: int) -> None:
        self.names = names
        self.max_bytes = max_bytes
        self.fields: dict[str, bytearray] = {}
        self._header_name = b""
        self._header_value = b""
        self._current: bytearray | None = None

    def on_part_begin(self) -> None:
        self._current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            name = params.get(b"name", b"").decode("utf-8", "replace")
            if name in self.names and name not in self.fields:
                self._current = self.fields[name] = bytearray()
        self._header_name = self._header_value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        if len(self._current) + (end - start) > self.max_bytes:
            raise errors.upload_too_large(self.max_bytes)
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
    fields = await read_multipart_fields(request, frozenset({FILE_FIELD}), max_bytes, max_bytes + _MULTIPART_OVERHEAD)
    if FILE_FIELD not in fields:
        raise errors.bad_request(
            f"The multipart body has no field named '{FILE_FIELD}': send the image as -F {FILE_FIELD}=@photo.jpg."
        )
    return fields[FILE_FIELD]


async def read_multipart_fields(
    request: Request, names: frozenset[str], max_part_bytes: int, max_total_bytes: int
) -> dict[str, bytes]:
    """The named parts of a multipart body, in memory: each within ``max_part_bytes``, all within ``max_total_bytes``."""
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise errors.bad_request("The multipart Content-Type has no boundary.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_total_bytes:
        raise errors.upload_too_large(max_part_bytes)
    part = _Parts(names, max_part_bytes)
    parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
    total_limit = max_total_bytes
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > total_limit:
                raise errors.upload_too_large(max_part_bytes)
            parser.write(chunk)
        parser.finalize()
    except ParseError:
        raise errors.bad_request("The multipart body is malformed.") from None
    except ClientDisconnect:
        raise errors.bad_request("The client disconnected before the upload finished.") from None
    return {name: bytes(data) for name, data in part.fields.items()}
