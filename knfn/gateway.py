"""The gateway: Knative's URLs on one port, proxied to the replicas of each Service.

Routes by Host header and by absolute-form (proxy) request line, so a function that calls
``http://query.default.svc.cluster.local`` through ``HTTP_PROXY`` reaches query. Unknown hosts get
a 404 naming the known Services: the gateway is never an open proxy. Bodies stream both ways.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from knfn.routing import parse_host

# RFC 9110 7.6.1: connection-specific headers are not forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


@dataclass
class Route:
    """Where a Service's requests go: its ready replicas' URLs, used in turn."""

    namespace: str
    service: str
    timeout_seconds: float
    backends: list[str] = field(default_factory=list)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def pick(self) -> str | None:
        if not self.backends:
            return None
        return self.backends[next(self._turn) % len(self.backends)]


class Gateway:
    """An aiohttp application that proxies to the routes it is given."""

    def __init__(self, routes: Callable[[], dict[tuple[str, str], Route]]) -> None:
        self._routes = routes
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=0)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_startup.append(self._open)
        self.app.on_cleanup.append(self._close)

    async def _open(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = parse_host(request.url.host or request.host)
        routes = self._routes()
        route = routes.get((target.namespace, target.service)) if target else None
        if route is None:
            return _error(
                404,
                f"no Knative Service for host {request.host!r}",
                services=sorted(f"{s}.{n}" for n, s in routes),
            )
        backend = route.pick()
        if backend is None:
            return _error(503, f"{route.service}.{route.namespace} has no ready replica")
        return await self._forward(request, route, backend)

    async def _forward(
        self, request: web.Request, route: Route, backend: str
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        headers["Host"] = request.host
        body = request.content if request.body_exists else None
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(route.timeout_seconds):
                async with self._session.request(
                    request.method,
                    backend + request.rel_url.path_qs,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                ) as upstream:
                    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                    for key, value in upstream.headers.items():
                        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                            response.headers.add(key, value)
                    if upstream.content_length is not None:
                        response.content_length = upstream.content_length
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                    return response
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            if response is not None and response.prepared:
                # The status line is gone already: all that is left is to cut the response off.
                if request.transport is not None:
                    request.transport.close()
                return response
            if isinstance(exc, TimeoutError):
                return _error(
                    504, f"{route.service} did not answer within {route.timeout_seconds:g}s"
                )
            return _error(502, f"{route.service} failed: {exc.__class__.__name__}: {exc}")


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message, **extra}),
        content_type="application/json",
    )
