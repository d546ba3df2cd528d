"""A client socket that knows when each answer reached this host, not when the client looked.

The load generator is one Python event loop driving 64 connections; in a flood it spends most
of a core pushing uploads, so an answer can sit in the socket for tens of milliseconds before
the loop reads it. That wait is the client's, not the server's. The kernel stamps every TCP
segment as it arrives (SO_TIMESTAMPNS), and ``recvmsg`` hands the stamp of the last segment it
read to the caller: ``StampedReader.stamp_ns`` is when the bytes read so far arrived.

The reader and writer offer the few methods of asyncio's ``StreamReader`` and ``StreamWriter``
that ``bench.load.Connection`` uses, with the same errors, so the client logic is unchanged.
"""

from __future__ import annotations

import asyncio
import socket
import struct

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's number; Python names it only from 3.13 on
_STAMP = struct.Struct("@qq")  # struct timespec
_READ_SIZE = 1 << 16


async def open_stamped(host: str, port: int, limit: int = 1 << 20) -> tuple[StampedReader, SocketWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's own connections
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return StampedReader(sock, limit), SocketWriter(sock)


class StampedReader:
    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False
        self.stamp_ns = 0  # CLOCK_REALTIME, as time.time_ns(): when the last byte read so far arrived

    async def readuntil(self, separator: bytes) -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            if len(self._buffer) > self._limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", len(self._buffer))
            if not await self._fill():
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, None)
        return self._take(end + len(separator))

    async def read(self, n: int) -> bytes:
        if not self._buffer and not await self._fill():
            return b""
        return self._take(min(n, len(self._buffer)))

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not await self._fill():
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), n)
        return self._take(n)

    def _take(self, n: int) -> bytes:
        piece = bytes(self._buffer[:n])
        del self._buffer[:n]
        return piece

    async def _fill(self) -> bool:
        """Read what has arrived, waiting for it if need be; False at the end of the stream."""
        if self._eof:
            return False
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(_READ_SIZE, socket.CMSG_SPACE(_STAMP.size))
                break
            except (BlockingIOError, InterruptedError):
                await _readable(self._sock)
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _STAMP.unpack(raw[: _STAMP.size])
                self.stamp_ns = seconds * 1_000_000_000 + nanoseconds
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True


class SocketWriter:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        """Send at once what the socket takes; ``drain`` sends the rest."""
        if not self._pending:
            try:
                data = memoryview(data)[self._sock.send(data) :]
            except (BlockingIOError, InterruptedError):
                pass
        self._pending += data

    async def drain(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            await asyncio.get_running_loop().sock_sendall(self._sock, pending)

    def close(self) -> None:
        self._sock.close()

    async def wait_closed(self) -> None:
        return None


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()  # kept: once the socket is closed, fileno() says -1
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)
