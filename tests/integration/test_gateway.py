"""The gateway in front of a real HTTP server on a loopback port: routing, errors, headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from knfn.gateway import Gateway
from knfn.routing import Target
from knfn.serving.throttler import Throttler
from tests.support import free_port


class Rev:
    """A revision as the gateway sees it: a name, timeouts and a real throttler."""

    def __init__(self, name: str, timeout: float, *urls: str, response_start: float = 60) -> None:
        self.name = name
        self.labels = ("default", name, f"{name}-00001")
        self.timeout_seconds = timeout
        self.response_start_timeout_seconds = response_start
        self.idle_timeout_seconds = 0.0
        self.throttler = Throttler(0)
        for url in urls:
            self.throttler.add(url)


async def backend_handler(request: web.Request) -> web.Response:
    """Echo what arrived; ?sleep=seconds delays the answer."""
    await asyncio.sleep(float(request.query.get("sleep", "0")))
    body = await request.read()
    return web.json_response(
        {
            "host": request.headers.get("Host"),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "forwarded_host": request.headers.get("X-Forwarded-Host"),
            "connection": request.headers.get("Proxy-Connection"),
            "length": len(body),
            "path": request.path_qs,
        }
    )


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A replica that dies with the request: it reads the head and closes the connection."""
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


@asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def run(test: Callable[[str, dict[str, Rev]], Awaitable[None]]) -> None:
    """Start a backend and a gateway routing echo.default to it, then run the test body."""

    async def main() -> None:
        backend_app = web.Application(client_max_size=0)
        backend_app.router.add_route("*", "/{tail:.*}", backend_handler)
        backend_port, gateway_port, crash_port = free_port(), free_port(), free_port()
        revs = {
            "echo": Rev("echo", 0.5, f"http://127.0.0.1:{backend_port}"),
            "gone": Rev("gone", 0.3, f"http://127.0.0.1:{free_port()}"),
            "crash": Rev("crash", 5, f"http://127.0.0.1:{crash_port}"),
            "slowstart": Rev(
                "slowstart", 5, f"http://127.0.0.1:{backend_port}", response_start=0.2
            ),
            "cold": Rev("cold", 0.3),
        }

        def route(target: Target) -> Rev | None:
            return revs.get(target.service) if target.namespace == "default" else None

        gateway = Gateway(route, lambda: sorted(f"{n}.default" for n in revs))
        crash = await asyncio.start_server(_hang_up, "127.0.0.1", crash_port)
        async with crash, serving(backend_app, backend_port), serving(gateway.app, gateway_port):
            await test(f"http://127.0.0.1:{gateway_port}", revs)

    asyncio.run(main())


def test_host_routing_forwards_headers_and_streams_bodies() -> None:
    """A Knative host reaches its Service with Host kept, X-Forwarded-* set, 5 MB intact."""

    async def body(gw: str, _: dict[str, Rev]) -> None:
        async with aiohttp.ClientSession() as client:
            headers = {"Host": "echo.default", "Proxy-Connection": "keep-alive"}
            async with client.post(gw + "/a?b=1", data=b"x" * 5_000_000, headers=headers) as r:
                assert r.status == 200
                got = await r.json()
        assert got["host"] == "echo.default"
        assert got["forwarded_host"] == "echo.default"
        assert got["forwarded_for"] == "127.0.0.1"
        assert got["connection"] is None  # hop-by-hop: not forwarded
        assert (got["length"], got["path"]) == (5_000_000, "/a?b=1")

    run(body)


def test_absolute_form_request_is_routed_by_its_url() -> None:
    """A proxy-style request for the in-cluster URL reaches the Service."""

    async def body(gw: str, _: dict[str, Rev]) -> None:
        async with aiohttp.ClientSession() as client:
            url = "http://echo.default/x"
            async with client.get(url, proxy=gw) as r:
                assert r.status == 200
                assert (await r.json())["path"] == "/x"

    run(body)


def test_errors_are_json_with_knative_statuses() -> None:
    """Unknown host 404 listing Services; slow answer 504; a replica that dies with the request
    502; one that refuses the connection is taken out of rotation and the request held for
    another (here none comes: 504); held at zero 504."""

    async def body(gw: str, revs: dict[str, Rev]) -> None:
        async with aiohttp.ClientSession() as client:

            async def get(host: str, path: str = "/") -> tuple[int, dict[str, object]]:
                async with client.get(gw + path, headers={"Host": host}) as r:
                    return r.status, json.loads(await r.text())

            status, err = await get("nope.default")
            assert status == 404 and "echo.default" in err["services"]
            status, err = await get("echo.default", "/?sleep=2")
            assert status == 504 and "0.5s" in str(err["error"])
            status, err = await get("slowstart.default", "/?sleep=1")
            assert status == 504
            status, err = await get("crash.default")
            assert status == 502 and "crash failed" in str(err["error"])
            status, err = await get("gone.default")
            assert status == 504 and revs["gone"].throttler.endpoints == ()
            status, err = await get("cold.default")
            assert status == 504 and revs["cold"].throttler.waiting == 0

    run(body)
