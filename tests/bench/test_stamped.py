"""The load generator's socket: answers are timed by their arrival, not by when the client looked."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from bench.stamped import open_stamped


def _answer_after(server: socket.socket, delay_s: float, sent_at: list[int]) -> None:
    connection, _ = server.accept()
    with connection:
        connection.recv(100)
        time.sleep(delay_s)
        sent_at.append(time.time_ns())
        connection.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\n\r\nbusy!")


def test_the_stamp_is_the_arrival_and_the_stream_reads_as_asyncio_s() -> None:
    sent_at: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        answering = threading.Thread(target=_answer_after, args=(server, 0.05, sent_at))
        answering.start()

        async def exchange() -> tuple[bytes, bytes, int, int]:
            reader, writer = await open_stamped("127.0.0.1", server.getsockname()[1])
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.4)  # a client busy elsewhere: the answer waits in the socket
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(5)
            looked = time.time_ns()
            with pytest.raises(asyncio.IncompleteReadError):
                await reader.readexactly(1)  # the server closed
            assert await reader.read(10) == b""
            writer.close()
            return head, body, reader.stamp_ns, looked

        head, body, stamp_ns, looked_ns = asyncio.run(exchange())
        answering.join()
    assert head.startswith(b"HTTP/1.1 503") and body == b"busy!"
    assert 0 <= stamp_ns - sent_at[0] < 30_000_000  # within 30 ms of the send, on loopback
    assert looked_ns - stamp_ns > 300_000_000  # the client's own delay is not in the stamp
