"""The gateway: Knative's URLs on one port, through each revision's throttler to a replica.

Routes by Host header and by absolute-form (proxy) request line, so a function that calls
``http://query.default.svc.cluster.local`` through ``HTTP_PROXY`` reaches query. Unknown hosts get
a 404 naming the known Services: the gateway is never an open proxy. Bodies stream both ways.
Statuses as Knative's: 503 when the revision's queue is full, 504 when ``timeoutSeconds`` or
``responseStartTimeoutSeconds`` runs out (both counted from the request's arrival, so the wait
for a slot or a cold start counts, as in Knative's activator; the answer names the one), 502
when the replica fails.

Slow clients. A replica slot (containerConcurrency) is the scarce thing, so a request takes one
only once its body is ready to go: the gateway first reads the body, up to ``BODY_BUFFER`` bytes,
within ``body_timeout`` (408 otherwise), and only then waits for a slot; a longer body streams
on from there, and a pause of more than ``body_idle_timeout`` between its chunks ends the request
(408). So a client trickling its body holds a connection and at most ``BODY_BUFFER`` bytes, never
a slot. Knative's own servers set no body timeout (knative.dev/pkg network/server.go sets only
ReadHeaderTimeout; queue-proxy's breaker slot is held while the body streams, bounded only by
timeoutSeconds): stricter here because one laptop has few slots. Requests without a body (most
GETs) skip all this: the hot path costs one attribute read. Header timeouts and JSON parse
errors are server.py's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web

from knfn import metrics, server
from knfn.routing import Target, parse_host
from knfn.serving.throttler import Overloaded, Throttler

# Idle connections to replicas are dropped before the replica drops them: functions-framework's
# gunicorn closes an idle keep-alive connection after 2 s (its `keepalive` default), and a
# request written to a connection the replica is closing fails with a 502 it never caused.
REPLICA_KEEPALIVE = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Read before a slot is taken: every CloudEvent and JSON body fits, and 200 slow clients at this
# bound hold 50 MiB at most. Larger bodies (uploads) stream once this much has arrived.
BODY_BUFFER = 256 * 1024
BODY_TIMEOUT = 10.0  # seconds to send the body, or its first BODY_BUFFER bytes
BODY_IDLE_TIMEOUT = 10.0  # longest pause between chunks of a body streamed past BODY_BUFFER

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
        *,
        body_timeout: float = BODY_TIMEOUT,
        body_idle_timeout: float = BODY_IDLE_TIMEOUT,
    ) -> None:
        self._body_timeout = body_timeout
        self._body_idle_timeout = body_idle_timeout
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
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=REPLICA_KEEPALIVE),
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
        arrival = asyncio.get_running_loop().time()  # the request timeouts' clocks start here
        body: _Body | None = None
        if request.body_exists:
            body = await self._read_head(request)
            if body is None:
                response: web.StreamResponse = _too_slow(
                    f"request body not received within {self._body_timeout:g}s"
                )
                metrics.REQUESTS.labels(*backend.labels, "408").inc()
                return response
        response = await self._admit(request, backend, body, arrival)
        labels = backend.labels
        metrics.REQUESTS.labels(*labels, str(response.status)).inc()
        metrics.LATENCY.labels(*labels).observe(time.perf_counter() - started)
        return response

    async def _read_head(self, request: web.Request) -> _Body | None:
        """The body, or its first BODY_BUFFER bytes, read within body_timeout (None: too slow)."""
        content = request.content
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._body_timeout):
                while size < BODY_BUFFER:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except TimeoutError:
            return None
        return _Body(b"".join(chunks), content.at_eof())

    async def _admit(
        self, request: web.Request, backend: Backend, body: _Body | None, arrival: float
    ) -> web.StreamResponse:
        """Hold the request for a replica slot (or refuse it), then forward it.

        ``timeoutSeconds`` and ``responseStartTimeoutSeconds`` both run from ``arrival`` (the
        loop's clock), the wait for a slot included: Knative's activator and queue-proxy wrap
        their throttling in the timeout handler (knative/serving pkg/http/handler/timeout.go).
        """
        throttler = backend.throttler
        response_start = arrival + backend.response_start_timeout_seconds
        try:
            async with asyncio.timeout_at(arrival + backend.timeout_seconds) as whole:
                try:
                    async with asyncio.timeout_at(response_start):
                        endpoint = await throttler.acquire()
                except Overloaded as exc:
                    return _error(503, f"{backend.name}: {exc}")
                try:
                    return await self._forward(request, backend, endpoint.url, body, response_start)
                finally:
                    throttler.release(endpoint)
        except TimeoutError:
            if whole.expired():
                field, limit = "timeoutSeconds", backend.timeout_seconds
            else:
                field, limit = "responseStartTimeoutSeconds", backend.response_start_timeout_seconds
            return _error(504, f"{backend.name}: {field} ({limit:g}s) ran out", timeout=field)

    async def _forward(
        self,
        request: web.Request,
        backend: Backend,
        base: str,
        body: _Body | None,
        response_start: float,
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        headers["Host"] = request.host
        data: bytes | AsyncIterator[bytes] | None = None
        if body is not None:
            data = body.head if body.complete else self._rest(request, body)
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout_at(response_start):
                upstream = await self._session.request(
                    request.method,
                    base + request.rel_url.path_qs,
                    headers=headers,
                    data=data,
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
            if body is not None and body.stalled:
                return _too_slow(f"request body paused for more than {self._body_idle_timeout:g}s")
            if isinstance(exc, TimeoutError):
                raise  # the request's own deadline, or the response-start one: 504
            return _error(502, f"{backend.name} failed: {exc.__class__.__name__}: {exc}")

    async def _rest(self, request: web.Request, body: _Body) -> AsyncIterator[bytes]:
        """The buffered head, then the rest of the body as it arrives, with an idle timeout."""
        yield body.head
        content = request.content
        while True:
            try:
                async with asyncio.timeout(self._body_idle_timeout):
                    chunk = await content.readany()
            except TimeoutError:
                body.stalled = True
                raise ConnectionAbortedError("request body stalled") from None
            if not chunk:
                return
            yield chunk


@dataclass(eq=False)
class _Body:
    """A request body as read before its slot: all of it, or its first BODY_BUFFER bytes."""

    head: bytes
    complete: bool
    stalled: bool = False  # set when the streamed rest paused past the idle timeout


def _too_slow(message: str) -> web.Response:
    # The unread rest of the body makes the connection useless: close it after the answer.
    response = _error(408, message)
    response.force_close()
    return response


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.Response(
        status=status, body=server.error_body(message, **extra), content_type="application/json"
    )
