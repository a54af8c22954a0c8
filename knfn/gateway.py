"""The gateway: Knative's URLs on one port, through each revision's throttler to a replica.

Routes by Host header and by absolute-form (proxy) request line, so a function that calls
``http://query.default.svc.cluster.local`` through ``HTTP_PROXY`` reaches query. Unknown hosts get
a 404 naming the known Services: the gateway is never an open proxy. Bodies stream both ways.
Statuses as Knative's: 503 when the revision's queue is full, 504 when ``timeoutSeconds`` (which
includes the wait for a cold start) or ``responseStartTimeoutSeconds`` runs out, 502 when the
replica fails.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
from aiohttp import web

from knfn import metrics
from knfn.routing import Target, parse_host
from knfn.throttler import Overloaded, Throttler

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


class Backend(Protocol):
    """A revision as the gateway sees it."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> tuple[str, str, str]: ...

    @property
    def timeout_seconds(self) -> float: ...

    @property
    def response_start_timeout_seconds(self) -> float: ...

    @property
    def throttler(self) -> Throttler: ...


class Gateway:
    """An aiohttp application proxying to whatever ``route(target)`` names.

    ``local`` names the hosts served in this process (the broker ingress, flows) by handler.
    """

    def __init__(
        self,
        route: Callable[[Target], Backend | None],
        known: Callable[[], list[str]],
        local: Callable[[Target], Handler | None] = lambda _: None,
    ) -> None:
        self._route = route
        self._known = known
        self._local = local
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=0)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_startup.append(self._open)
        self.app.on_cleanup.append(self._close)

    async def _open(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = parse_host(request.url.host or request.host)
        if target is None:
            return _error(404, f"no Knative Service for host {request.host!r}",
                          services=self._known())  # fmt: skip
        handler = self._local(target)
        if handler is not None:
            return await handler(request)
        backend = self._route(target)
        if backend is None:
            return _error(
                404, f"no Knative Service for host {request.host!r}", services=self._known()
            )
        started = time.perf_counter()
        response = await self._admit(request, backend)
        labels = backend.labels
        metrics.REQUESTS.labels(*labels, str(response.status)).inc()
        metrics.LATENCY.labels(*labels).observe(time.perf_counter() - started)
        return response

    async def _admit(self, request: web.Request, backend: Backend) -> web.StreamResponse:
        """Hold the request for a replica slot (or refuse it), then forward it."""
        throttler = backend.throttler
        try:
            async with asyncio.timeout(backend.timeout_seconds):
                try:
                    endpoint = await throttler.acquire()
                except Overloaded as exc:
                    return _error(503, f"{backend.name}: {exc}")
                try:
                    return await self._forward(request, backend, endpoint.url)
                finally:
                    throttler.release(endpoint)
        except TimeoutError:
            return _error(504, f"{backend.name} did not answer within {backend.timeout_seconds:g}s")

    async def _forward(
        self, request: web.Request, backend: Backend, base: str
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
            async with asyncio.timeout(backend.response_start_timeout_seconds):
                upstream = await self._session.request(
                    request.method,
                    base + request.rel_url.path_qs,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
            try:
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
            finally:
                upstream.release()
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            if response is not None and response.prepared:
                # The status line is gone already: all that is left is to cut the response off.
                if request.transport is not None:
                    request.transport.close()
                return response
            if isinstance(exc, TimeoutError):
                raise  # the request's own deadline, or the response-start one: 504
            return _error(502, f"{backend.name} failed: {exc.__class__.__name__}: {exc}")


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message, **extra}),
        content_type="application/json",
    )
