"""The gateway's tunnel for an Upgrade (WebSocket) request: the replica's answer to the
handshake read with h11, relayed like any response when the replica declines, and after its 101
the bytes spliced both ways between the client's connection and the replica's.
"""

from __future__ import annotations

import asyncio
from collections import deque

import h11
from aiohttp import web

from knfn.serving import queue_proxy

READ_SIZE = 64 * 1024
TUNNEL_BUFFER = 1 << 20  # bytes from a WebSocket client held for a slower replica, at most


async def next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ_SIZE))


async def answer(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> h11.InformationalResponse | h11.Response:
    """The replica's answer to an upgrade request: its 101, or the response that declines."""
    while True:
        event = await next_event(conn, reader)
        if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            continue  # 100 Continue
        if isinstance(event, (h11.InformationalResponse, h11.Response)):
            return event
        raise h11.RemoteProtocolError(f"expected a response, got {event!r}")


async def relay(
    request: web.Request, conn: h11.Connection, reader: asyncio.StreamReader, head: h11.Response
) -> web.StreamResponse:
    """A replica's answer to an upgrade it declined, as any other response."""
    response = web.StreamResponse(status=head.status_code, reason=head.reason.decode("latin-1"))
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers.raw_items()]
    for key, value in queue_proxy.end_to_end(raw):
        if key.lower() == "content-length":
            response.content_length = int(value)
        else:
            response.headers.add(key, value)
    await response.prepare(request)
    while True:
        event = await next_event(conn, reader)
        if isinstance(event, h11.Data):
            await response.write(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise h11.RemoteProtocolError(f"expected a body, got {event!r}")
    await response.write_eof()
    return response


class Tunnel:
    """The bytes a client sends on its upgraded connection. aiohttp's server hands them to the
    payload parser a handler installs (its WebSocket reader is one); this one queues them, and
    stops reading the socket while the replica is slower than the client."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._paused = False
        self._wakeup: asyncio.Event = asyncio.Event()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._chunks.append(bytes(data))
        self._size += len(data)
        if self._size > TUNNEL_BUFFER and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wakeup.set()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wakeup.set()

    async def read(self) -> bytes:
        """The next bytes from the client; b"" once it has closed."""
        while not self._chunks and not self._eof:
            self._wakeup.clear()
            await self._wakeup.wait()
        if not self._chunks:
            return b""
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size <= TUNNEL_BUFFER // 2:
            self._paused = False
            self._transport.resume_reading()
        return data


async def splice(
    request: web.Request,
    response: web.StreamResponse,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    early: bytes,
    idle: float | None,
) -> None:
    """Bytes both ways between an upgraded client connection and the replica, until either side
    closes, or nothing has passed either way for `idle` seconds; then both are closed."""
    assert request.transport is not None
    loop = asyncio.get_running_loop()
    tunnel = Tunnel(request.transport)
    request.protocol.set_parser(tunnel)  # type: ignore[arg-type]
    last = [loop.time()]

    async def down() -> None:  # replica to client
        if early:
            await response.write(early)
        while data := await reader.read(READ_SIZE):
            last[0] = loop.time()
            await response.write(data)

    async def up() -> None:  # client to replica
        while data := await tunnel.read():
            last[0] = loop.time()
            writer.write(data)
            await writer.drain()

    tasks = {asyncio.create_task(down()), asyncio.create_task(up())}
    try:
        while True:
            wait = None if idle is None else last[0] + idle - loop.time()
            if wait is not None and wait <= 0:
                break
            done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if done:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        request.transport.close()  # the client's connection: nothing more can pass on it
