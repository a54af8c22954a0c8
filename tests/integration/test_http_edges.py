"""The gateway and the admin API against bad and slow clients, over real loopback sockets:
parse errors as JSON (431 for oversized headers), a header read timeout, loopback Host only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from knfn import admin_api, server
from knfn.gateway import Gateway
from knfn.routing import Target
from knfn.serving.throttler import Throttler
from tests.support import free_port


class Rev:
    """A revision as the gateway sees it, with one replica of containerConcurrency 1."""

    def __init__(self, url: str) -> None:
        self.name = "echo"
        self.labels = ("default", "echo", "echo-00001")
        self.timeout_seconds = 30.0
        self.response_start_timeout_seconds = 30.0
        self.idle_timeout_seconds = 0.0
        self.throttler = Throttler(1)
        self.throttler.add(url)


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"length": len(await request.read())})


async def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """Send raw bytes; the status and JSON body of the one response that comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        assert headers["Content-Type"].startswith("application/json"), head
        body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), timeout)
        return int(lines[0].split()[1]), json.loads(body)
    finally:
        writer.close()


@asynccontextmanager
async def faces(header_timeout: float, body_timeout: float) -> AsyncIterator[tuple[int, int]]:
    """A backend, the gateway routing echo.default to it, and the admin API: their ports."""
    backend = web.Application(client_max_size=0)
    backend.router.add_route("*", "/", echo)
    backend_port, gateway_port, admin_port = free_port(), free_port(), free_port()
    rev = Rev(f"http://127.0.0.1:{backend_port}")

    def route(target: Target) -> Rev | None:
        return rev if target.service == "echo" else None

    async def status() -> dict[str, Any]:
        return {"services": []}

    class Events:
        async def events(self, _: int) -> list[dict[str, Any]]:
            return []

        async def event(self, _: int) -> dict[str, Any]:
            return {}

        async def replay(self, _: int, __: str | None) -> dict[str, Any]:
            return {}

    gateway = Gateway(
        route, lambda: ["echo.default"], body_timeout=body_timeout, body_idle_timeout=body_timeout
    )
    runners = [
        await server.serve(backend, backend_port),
        await server.serve(gateway.app, gateway_port, header_timeout=header_timeout),
        await server.serve(admin_api.build(status, Events()), admin_port),
    ]
    try:
        yield gateway_port, admin_port
    finally:
        for runner in runners:
            await runner.cleanup()


def run(
    test: Callable[[int, int], Awaitable[None]],
    header_timeout: float = 60,
    body_timeout: float = 10,
) -> None:
    async def main() -> None:
        async with faces(header_timeout, body_timeout) as (gateway_port, admin_port):
            await test(gateway_port, admin_port)

    asyncio.run(main())


def test_parse_errors_are_json_with_431_for_oversized_headers() -> None:
    """Garbage request line 400, long header or URL 431, bad chunk 400: JSON on both faces."""

    async def body(gateway: int, admin: int) -> None:
        big_header = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
        long_url = b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        too_many = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n"
        bad_chunk = (
            b"POST / HTTP/1.1\r\nHost: echo.default\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nabc\r\n0\r\n\r\n"
        )
        for port in (gateway, admin):
            status, err = await exchange(port, b"GARBAGE\r\n\r\n")
            assert status == 400 and "method" in err["error"].lower()
            status, err = await exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n")
            assert status == 400 and err["error"]
            for request in (big_header, long_url, too_many):
                status, err = await exchange(port, request)
                assert status == 431
                assert err["error"].startswith("request header fields too large")
            status, err = await exchange(port, bad_chunk)
            assert status == 400 and "chunk" in err["error"]

    run(body)


def test_admin_api_serves_loopback_hosts_only() -> None:
    """Host evil.example: 421 JSON naming it; 127.0.0.1:PORT, localhost, [::1] served."""

    async def body(_: int, admin: int) -> None:
        def get(host: str) -> bytes:
            return f"GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

        for host in ("evil.example", f"evil.example:{admin}", "127.0.0.1.nip.io", "localhostx"):
            status, err = await exchange(admin, get(host))
            assert status == 421, host
            assert err["host"] == host and repr(host) in err["error"]
        for host in (f"127.0.0.1:{admin}", "127.0.0.1", "localhost", f"LocalHost:{admin}", "[::1]"):
            status, got = await exchange(admin, get(host))
            assert (status, got) == (200, {"services": []}), host
        status, err = await exchange(admin, b"GET /status HTTP/1.0\r\n\r\n")
        assert status == 421  # no Host at all is no loopback name either

    run(body)


def test_headers_trickled_past_the_timeout_get_408_and_a_closed_connection() -> None:
    """A client that never finishes its headers is answered 408 after header_timeout."""

    async def body(gateway: int, _: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
        writer.write(b"POST / HTTP/1.1\r\nHost: echo.def")
        started = asyncio.get_running_loop().time()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the gateway closes
        waited = asyncio.get_running_loop().time() - started
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"request headers not received within 0.5s" in answer
        assert 0.4 < waited < 5
        # A kept-alive connection: the timer runs again only once a next request begins.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
        request = b"POST / HTTP/1.1\r\nHost: echo.default\r\nContent-Length: 2\r\n\r\nab"
        writer.write(request)
        first = await asyncio.wait_for(reader.readuntil(b'{"length": 2}'), 10)
        assert first.startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(1.0)  # idle past the header timeout: still open
        writer.write(request)
        second = await asyncio.wait_for(reader.readuntil(b'{"length": 2}'), 10)
        assert second.startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET / HTTP/1.1\r\n")  # begun, never finished
        late = await asyncio.wait_for(reader.read(), 10)
        assert late.startswith(b"HTTP/1.1 408 ")
        writer.close()

    run(body, header_timeout=0.5)


def test_slow_bodies_get_408_and_fast_ones_stream() -> None:
    """A body not sent within the body timeout, or pausing mid-stream past it: 408. A large
    body sent at once streams through whole."""

    async def body(gateway: int, _: int) -> None:
        head = "POST / HTTP/1.1\r\nHost: echo.default\r\nContent-Length: {}\r\n\r\n"
        status, err = await exchange(gateway, head.format(10).encode() + b"ab")
        assert (status, err["error"]) == (408, "request body not received within 0.5s")
        # Past the buffered first 256 KiB the body streams; then it stops.
        status, err = await exchange(gateway, head.format(10**6).encode() + b"x" * 300_000)
        assert (status, err["error"]) == (408, "request body paused for more than 0.5s")
        status, got = await exchange(gateway, head.format(3 * 10**6).encode() + b"x" * 3 * 10**6)
        assert (status, got) == (200, {"length": 3 * 10**6})

    run(body, body_timeout=0.5)
