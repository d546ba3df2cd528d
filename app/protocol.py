"""uvicorn's HTTP protocol, except that a body the app never read is dropped by the kernel.

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

import mmap
import os
import socket
import sys

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_KERNEL_DISCARDS = sys.platform == "linux"
_SCRATCH = mmap.mmap(-1, 8 << 20)  # recv_into wants a buffer; MSG_TRUNC never writes it, so it costs no memory


class HttpProtocol(HttpToolsProtocol):
    _skip: _BodySkip | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.body_bytes_parsed = 0

    def on_body(self, body: bytes) -> None:
        self.body_bytes_parsed += len(body)
        super().on_body(body)

    def on_response_complete(self) -> None:
        unread = self._unread_body_bytes()
        if unread and _KERNEL_DISCARDS and self.scheme == "http" and not self.transport.is_closing():
            self.flow.pause_reading()  # the skip reads the socket until the body ends
            self._skip = _BodySkip(self, unread)
            return
        super().on_response_complete()

    def body_skipped(self) -> None:
        self._skip = None
        self.parser = httptools.HttpRequestParser(self)  # the old one still waits for the skipped bytes
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets its own
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._skip is not None:
            self._skip.stop()
            self._skip = None
        super().connection_lost(exc)

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
