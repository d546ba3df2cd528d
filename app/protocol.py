"""uvicorn's HTTP protocol, with the bounds a peer may not pass, and a body the app never read dropped by the kernel.

What one connection may cost is bounded here, before the app sees a request:

- The request line and headers must arrive within ``header_timeout_seconds``, counted from the
  connection's start (one that sends nothing is closed then too) and from the first byte of each
  next request; sending a byte a second buys nothing. Past it a request begun gets 408 ``header_timeout``.
- They may take at most ``max_header_bytes`` and ``MAX_HEADER_FIELDS`` fields, else 431
  ``headers_too_large``. The bytes are counted as they arrive and the parser is fed no more than
  the room left: httptools and uvicorn grow a header by concatenation, so a 96 MB header cost
  34 s of event loop, quadratic in its pieces.
- At most ``max_connections`` are open: a new one past it closes the keep-alive connection idle
  the longest, or, if every one is busy, is refused with 503 ``too_many_connections``. (uvicorn's
  own ``limit_concurrency`` counts requests, not descriptors, and answers them with plain-text 503s;
  the app's admission control already bounds the work.)

These answers are raw HTTP written from here, with the JSON error body every other refusal has;
the write side is then shut and the client's further input dropped for a moment, so that its
kernel does not answer our close with a reset that would lose the answer.

When the app answers before reading the upload (a 503 while the pool is full, a 401, a 413
from the declared length), the rest of the body is still owed on the connection and must be
taken off it before the next request can be read. uvicorn reads it in 256 KB pieces and
feeds them through the HTTP parser, which hands each to Python as a new bytes object, only to
drop it: in a flood of 2.9 MB uploads refused with 503, copying bodies was most of the
event loop. Here the socket is read with MSG_TRUNC, which on Linux discards TCP data without
copying it out, exactly up to the body's end; then the connection goes on with a fresh
parser, so a keep-alive client loses nothing.

Only a body framed by Content-Length, over plain TCP (under TLS the bytes are records that
must be decrypted in order) on Linux, is skipped this way; anything else still goes through
the parser. This leans on uvicorn's httptools protocol (its parser callbacks,
``cycle`` and ``flow``): the tests that send real uploads over real sockets guard it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app import errors

_KERNEL_DISCARDS = sys.platform == "linux"
_SCRATCH = mmap.mmap(-1, 8 << 20)  # recv_into wants a buffer; MSG_TRUNC never writes it, so it costs no memory

MAX_HEADER_FIELDS = 100  # browsers send about 15; proxies add a few
LINGER_SECONDS = 1.0  # after a refusal, how long the client's further input is read and dropped
LINGER_BYTES = 1 << 20  # ... and how much of it, before the connection is simply closed
CAP_WARNING_SECONDS = 60.0  # at most one warning this often that the connection cap refuses clients

logger = logging.getLogger("app.protocol")


@dataclass(frozen=True)
class ConnectionLimits:
    """What the protocol allows each connection; ``app.server.uvicorn_config`` makes it from the settings."""

    header_timeout_seconds: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_header_fields: int = MAX_HEADER_FIELDS
    max_connections: int = 1024


# The idle connections of each server, the longest idle first: the ones to close when the cap is reached.
_IDLE: WeakKeyDictionary[ServerState, dict[HttpProtocol, None]] = WeakKeyDictionary()
_last_cap_warning = 0.0


def raw_answer(error: errors.ApiError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """``error`` as a whole HTTP response that closes the connection, for requests the app never sees."""
    body = json.dumps(error.to_json()).encode()
    lines = [STATUS_LINE[error.status]]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in error.headers.items()]
    lines += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
    return b"".join([*lines, b"\r\n", body])


class HttpProtocol(HttpToolsProtocol):
    _skip: _BodySkip | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = getattr(config, "connection_limits", None) or ConnectionLimits()
        self._idle = _IDLE.setdefault(server_state, {})
        self._head_bytes: int | None = 0  # bytes of the request head being read; None while none is awaited
        self._heads_read = 0  # heads completed on this connection: tells a head counted from a new one
        self._head_fields = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._chunked = False  # the body being read is chunked, so trailers (headers again) may follow it
        self._progress = 0  # parser events inside a body: bytes fed between two of them are framing or trailers
        self._since_progress = 0
        self._heard = False  # any byte of the current head
        self._message_done = True  # the parser has seen the current request's end
        self._refusal: errors.ApiError | None = None  # raised by a parser callback, answered after the feed
        self._dropping = False  # refused: the input is no longer parsed
        self._linger_timer: asyncio.TimerHandle | None = None
        self._dropped = 0

    # Connections and their cap

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._close_idlest():
            self._refuse_connection()
            return
        self._idle[self] = None
        self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def _close_idlest(self) -> bool:
        """Close the connection idle the longest; False if every one is busy."""
        for victim in self._idle:
            del self._idle[victim]
            victim.transport.close()
            return True
        return False

    def _refuse_connection(self) -> None:
        global _last_cap_warning
        now = time.monotonic()
        if now - _last_cap_warning > CAP_WARNING_SECONDS:
            _last_cap_warning = now
            logger.warning("%d connections open, none idle: refusing new ones (MAX_CONNECTIONS)", len(self.connections))
        self._dropping = True
        self.transport.write(raw_answer(errors.too_many_connections(), self.server_state.default_headers))
        self.transport.close()  # no lingering: the descriptor is what is short

    def connection_lost(self, exc: Exception | None) -> None:
        self._idle.pop(self, None)
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        if self._skip is not None:
            self._skip.stop()
            self._skip = None
        super().connection_lost(exc)

    # Reading: the head bounded in time, bytes and fields

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            self._drop(len(data))
            return
        self._unset_keepalive_if_required()
        if self._head_bytes is not None:
            self._idle.pop(self, None)
            self._heard = True
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)
        view = memoryview(data)  # slices of it feed the parser without copies
        while view:
            counted, heads_before, progress_before = self._head_bytes, self._heads_read, self._progress
            # A head's bytes are bounded, and so are those between two events of a chunked body: chunk sizes, trailers.
            bounded = counted if counted is not None else self._since_progress if self._chunked else None
            piece = view
            if bounded is not None:
                room = self.limits.max_header_bytes - bounded
                if room <= 0:
                    self._refuse(errors.headers_too_large(self.limits.max_header_bytes, self.limits.max_header_fields))
                    return
                piece = view[:room]
            if not self._feed(piece):
                return
            if counted is not None and self._head_bytes is not None and self._heads_read == heads_before:
                self._head_bytes += len(piece)  # the same head from the piece's start: every byte was its
            # else a head began inside the piece after other bytes: counted from the next piece (at most one short)
            if self._chunked:
                self._since_progress = self._since_progress + len(piece) if self._progress == progress_before else 0
            view = view[len(piece) :]

    def _feed(self, piece: memoryview) -> bool:
        """Parse ``piece``; False if the connection is done with (refused, closed or upgraded)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSocket protocol is configured
            return False
        except httptools.HttpParserError:
            if self._refusal is None:
                self.logger.warning("Invalid HTTP request received.")
            self._refuse(self._refusal or errors.malformed_request())
            return False
        return not self.transport.is_closing() and not self._dropping

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.body_bytes_parsed = 0
        self._message_done = False
        self._head_fields = 0
        self._heard = True
        if self._head_bytes is None:  # pipelined after a request still in the app
            self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1  # trailers of a chunked body count too
        if self._head_fields > self.limits.max_header_fields:
            self._refusal = errors.headers_too_large(self.limits.max_header_bytes, self.limits.max_header_fields)
            raise self._refusal  # stops the parser where it is
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        self._heads_read += 1
        self._chunked = any(name == b"transfer-encoding" for name, _ in self.headers)
        self._progress += 1
        self._since_progress = 0
        super().on_headers_complete()

    def _end_head(self) -> None:
        self._head_bytes = None
        self._heard = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._heard:  # a connection that never sent a byte: there is no request to answer
            self.transport.close()
            return
        self._refuse(errors.header_timeout(self.limits.header_timeout_seconds))

    def _refuse(self, error: errors.ApiError) -> None:
        """Answer a request the app never saw with ``error`` and end the connection.

        Behind a response still being written (a pipelined request) nothing can be answered:
        the connection only ends after that response. Past the head there is no request to answer.
        """
        in_head = self._head_bytes is not None
        self._end_head()
        self._idle.pop(self, None)
        self._dropping = True
        if not in_head:  # a broken body or trailer: the app, if it still reads, sees the client gone
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        self.transport.write(raw_answer(error, self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then our FIN; the client's input is read on a while
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _drop(self, length: int) -> None:
        self._dropped += length
        if self._dropped > LINGER_BYTES and not self.transport.is_closing():
            self.transport.close()

    # The end of each request: back to waiting for the next head

    def on_body(self, body: bytes) -> None:
        self.body_bytes_parsed += len(body)
        self._progress += 1
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._progress += 1

    def on_chunk_complete(self) -> None:
        self._progress += 1

    def on_message_complete(self) -> None:
        self._message_done = True
        self._chunked = False
        super().on_message_complete()
        self._await_next_request()

    def on_response_complete(self) -> None:
        unread = self._unread_body_bytes()
        if unread and _KERNEL_DISCARDS and self.scheme == "http" and not self.transport.is_closing():
            try:
                skip = _BodySkip(self, unread)
            except OSError:  # no descriptor left for the duplicate: the parser reads the body instead
                skip = None
            if skip is not None:
                self.flow.pause_reading()  # the skip reads the socket until the body ends
                self._skip = skip
                return
        super().on_response_complete()
        self._await_next_request()

    def body_skipped(self) -> None:
        self._skip = None
        self.parser = httptools.HttpRequestParser(self)  # the old one still waits for the skipped bytes
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets its own
        self._message_done = True
        super().on_response_complete()
        self._await_next_request()

    def _await_next_request(self) -> None:
        """Once a request is both read and answered, the connection idles until the next head begins."""
        answered = self.cycle is None or self.cycle.response_complete
        if not (self._message_done and answered) or self.pipeline or self._dropping or self.transport.is_closing():
            return
        if self._head_bytes is None:
            self._head_bytes = 0
            self._idle[self] = None

    def shutdown(self) -> None:
        if self._dropping:
            self.transport.close()
            return
        super().shutdown()

    def _unread_body_bytes(self) -> int:
        cycle = self.cycle
        if cycle is None or not cycle.response_complete or not cycle.more_body:
            return 0  # the whole request was read, or a pipelined one is next
        declared = b""
        for name, value in cycle.scope["headers"]:
            if name == b"transfer-encoding":
                return 0
            if name == b"content-length":
                declared = value
        return max(int(declared) - self.body_bytes_parsed, 0) if declared.isdigit() else 0


class _BodySkip:
    """Drops ``remaining`` bytes of the connection's input; a client that goes quiet meanwhile is let go.

    It reads through a duplicate of the socket's descriptor because the event loop allows no
    reader on a descriptor that a transport owns; the transport's own reading is paused.
    """

    def __init__(self, http: HttpProtocol, remaining: int) -> None:
        self.http = http
        self.remaining = remaining
        self._sock = socket.socket(fileno=os.dup(http.transport.get_extra_info("socket").fileno()))
        self._sock.setblocking(False)
        self._heard = False
        self._stopped = False
        http.loop.add_reader(self._sock.fileno(), self._read)
        self._timer = http.loop.call_later(http.timeout_keep_alive, self._let_go_if_quiet)

    def _read(self) -> None:
        try:
            dropped = self._sock.recv_into(_SCRATCH, min(self.remaining, len(_SCRATCH)), socket.MSG_TRUNC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            dropped = 0
        if not dropped:  # the client gave up on its upload
            self._let_go()
            return
        self._heard = True
        self.remaining -= dropped
        if not self.remaining:
            self.stop()
            self.http.body_skipped()

    def _let_go_if_quiet(self) -> None:
        if not self._heard:
            self._let_go()
            return
        self._heard = False
        self._timer = self.http.loop.call_later(self.http.timeout_keep_alive, self._let_go_if_quiet)

    def _let_go(self) -> None:
        self.stop()
        self.http.transport.close()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._timer.cancel()
        self.http.loop.remove_reader(self._sock.fileno())
        self._sock.close()  # the duplicate only: the transport still owns the connection
