"""The gateway: Knative's URLs on one port, through each revision's throttler to a replica.

Routes by Host header and by absolute-form (proxy) request line, so a function that calls
``http://query.default.svc.cluster.local`` through ``HTTP_PROXY`` reaches query. Unknown hosts get
a 404 naming the known Services: the gateway is never an open proxy. Bodies stream both ways,
chunk by chunk (server-sent events arrive as they are sent), and a WebSocket upgrade is tunnelled
to the replica (knfn/tunnel.py). Headers to the replica follow the queue-proxy's rules, and
probes are answered here (knfn/serving/queue_proxy.py). Statuses as Knative's: 503 when the
revision's queue is full, 504 when ``timeoutSeconds``, ``responseStartTimeoutSeconds`` or
``idleTimeoutSeconds`` runs out before the response starts (all counted from the request's
arrival, so the wait for a slot or a cold start counts, as in Knative's activator; the answer
names the one), 502 when the replica fails. A timeout after the response has started ends it
(see ``_stream``).

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
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol, TypeVar

import aiohttp
import h11
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from knfn import metrics, tunnel
from knfn.responses import Handler, error_body, json_error
from knfn.routing import Target, parse_host
from knfn.serving import queue_proxy
from knfn.serving.throttler import Overloaded, Throttler

# Idle connections to replicas are dropped before the replica drops them: functions-framework's
# gunicorn closes an idle keep-alive connection after 2 s (its `keepalive` default), and a
# request written to a connection the replica is closing fails with a 502 it never caused.
REPLICA_KEEPALIVE = 1.0

# Read before a slot is taken: every CloudEvent and JSON body fits, and 200 slow clients at this
# bound hold 50 MiB at most. Larger bodies (uploads) stream once this much has arrived.
BODY_BUFFER = 256 * 1024
BODY_TIMEOUT = 10.0  # seconds to send the body, or its first BODY_BUFFER bytes
BODY_IDLE_TIMEOUT = 10.0  # longest pause between chunks of a body streamed past BODY_BUFFER

# aiohttp's client adds these unless told not to; the caller's own are forwarded as sent.
NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent")
# The request key of a response already under way (streaming, or an upgraded connection): once
# its status line is out, that is the answer, whatever a timeout around it makes of the end.
SENT = web.RequestKey("knfn.gateway.sent", web.StreamResponse)


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
    def idle_timeout_seconds(self) -> float: ...

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
            trace_configs=[_sent_trace()],
        )

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = parse_host(request.url.host or request.host)
        if target is None:
            return json_error(404, f"no Knative Service for host {request.host!r}",
                          services=self._known())  # fmt: skip
        handler = self._local(target)
        if handler is not None:
            return await handler(request)
        backend = self._route(target)
        if backend is None:
            return json_error(
                404, f"no Knative Service for host {request.host!r}", services=self._known()
            )
        probe = queue_proxy.probe_answer(
            request.headers.items(), ready=bool(backend.throttler.endpoints)
        )
        if probe is not None:  # the queue-proxy's (or activator's) to answer, never counted
            return _probe_response(probe)
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
        sent = request.get(SENT)
        if sent is not None:
            response = sent
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
        clocks = _Clocks.of(backend)
        response_start = None if clocks.start is None else arrival + clocks.start
        try:
            async with asyncio.timeout_at(arrival + backend.timeout_seconds) as whole:
                while True:
                    try:
                        async with asyncio.timeout_at(response_start):
                            endpoint = await throttler.acquire()
                    except Overloaded as exc:
                        return json_error(503, f"{backend.name}: {exc}")
                    try:
                        return await self._forward(
                            request, backend, endpoint.url, body, clocks, response_start
                        )
                    except _Refused:
                        # The replica closed its socket: it is going (a stopping gunicorn
                        # closes its listener before it exits). Nothing was sent, so the
                        # request goes to another replica, as Kubernetes takes a terminating
                        # pod out of the endpoints before it stops.
                        throttler.remove(endpoint)
                    finally:
                        throttler.release(endpoint)
        except TimeoutError:
            if whole.expired():
                return _timed_out(backend.name, "timeoutSeconds", backend.timeout_seconds)
            return _timed_out(backend.name, clocks.start_field, clocks.start or 0.0)

    async def _forward(
        self,
        request: web.Request,
        backend: Backend,
        base: str,
        body: _Body | None,
        clocks: _Clocks,
        response_start: float | None,
    ) -> web.StreamResponse:
        assert self._session is not None
        out = queue_proxy.request_headers(
            request.headers.items(), peer=request.remote or "", scheme=request.scheme,
            host=request.host,
        )  # fmt: skip
        if queue_proxy.tunnelled_upgrade(request.headers.items()) is not None:
            return await self._upgrade(request, backend, base, out, body, clocks, response_start)
        headers = CIMultiDict(out.headers)
        headers["Host"] = out.host
        data: bytes | AsyncIterator[bytes] | None = None
        if body is not None:
            data = body.head if body.complete else self._rest(request, body)
        response: web.StreamResponse | None = None
        attempt = _Attempt()
        try:
            async with asyncio.timeout_at(response_start) as start_clock:
                upstream = await self._session.request(
                    request.method,
                    base + request.rel_url.path_qs,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    skip_auto_headers=NOT_ADDED,
                    trace_request_ctx=attempt,
                )
            try:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in queue_proxy.end_to_end(upstream.headers.items()):
                    if key.lower() != "content-length":
                        response.headers.add(key, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                request[SENT] = response
                await self._stream(request, response, upstream, backend, clocks)
                return response
            finally:
                upstream.release()
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            refused = isinstance(exc, aiohttp.ClientConnectorError) and not attempt.sent
            if refused and not isinstance(data, AsyncIterator):
                raise _Refused from exc  # never reached the replica: safe to send elsewhere
            if response is not None and response.prepared:
                # The status line is gone already: all that is left is to cut the response off.
                _cut(request)
                return response
            if body is not None and body.stalled:
                return _too_slow(f"request body paused for more than {self._body_idle_timeout:g}s")
            if isinstance(exc, TimeoutError):
                if start_clock.expired():
                    return _timed_out(backend.name, clocks.start_field, clocks.start or 0.0)
                raise  # the request's own deadline: 504
            return json_error(502, f"{backend.name} failed: {exc.__class__.__name__}: {exc}")

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        backend: Backend,
        clocks: _Clocks,
    ) -> None:
        """Copy the replica's body to the client chunk by chunk as it comes (a server-sent event
        stream included), with the idle timeout between chunks. A timeout once the response has
        started ends it, as Knative's timeout handler does (serving pkg/http/handler/timeout.go:
        the timeout message is written after what was sent, and the handler returns, which ends
        the chunked body); the replica's connection is closed, as Go's proxy cancels it."""
        try:
            while True:
                async with asyncio.timeout(clocks.idle):
                    chunk = await upstream.content.readany()
                if not chunk:
                    break
                await response.write(chunk)
        except TimeoutError:
            upstream.close()
            await _end(request, response, clocks.idle_message(backend.name))
            return
        except asyncio.CancelledError:
            # The request's timeoutSeconds (the only one to cancel a request in flight).
            upstream.close()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await _end(request, response, _timeout_message(backend))
            raise
        await response.write_eof()

    async def _upgrade(
        self,
        request: web.Request,
        backend: Backend,
        base: str,
        out: queue_proxy.Outgoing,
        body: _Body | None,
        clocks: _Clocks,
        response_start: float | None,
    ) -> web.StreamResponse:
        """A WebSocket: the handshake to the replica, its answer to the client, and then bytes
        both ways until either side closes, as Go's reverse proxy does after a 101 (the slot is
        held meanwhile, as the queue-proxy's breaker holds it). timeoutSeconds bounds the whole
        connection (Knative's timeout handler cancels the hijacked proxy), idleTimeoutSeconds
        the longest silence in both directions. A replica that declines gets its answer relayed."""
        url = URL(base)
        try:
            reader, writer = await asyncio.open_connection(url.host, url.port)
        except OSError as exc:
            return json_error(502, f"{backend.name} failed: {exc.__class__.__name__}: {exc}")
        try:
            conn = h11.Connection(h11.CLIENT)
            head = [("Host", out.host), *out.headers]
            target = request.rel_url.raw_path_qs
            writer.write(conn.send(h11.Request(method=request.method, target=target, headers=head)))
            if body is not None:
                chunks = [body.head] if body.complete else self._rest(request, body)
                async for chunk in _aiter(chunks):
                    writer.write(conn.send(h11.Data(data=chunk)))
            writer.write(conn.send(h11.EndOfMessage()))
            try:
                async with asyncio.timeout_at(response_start):
                    event = await tunnel.answer(conn, reader)
            except TimeoutError:
                return _timed_out(backend.name, clocks.start_field, clocks.start or 0.0)
            if isinstance(event, h11.Response):
                return await tunnel.relay(request, conn, reader, event)
            response = web.StreamResponse(status=101, reason=event.reason.decode("latin-1"))
            for key, value in event.headers.raw_items():
                response.headers.add(key.decode("latin-1"), value.decode("latin-1"))
            response.force_close()
            await response.prepare(request)
            request[SENT] = response
            early, _ = conn.trailing_data
            await tunnel.splice(request, response, reader, writer, early, clocks.idle)
            return response
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError) as exc:
            if request.get(SENT) is not None:
                _cut(request)
                return request[SENT]
            return json_error(502, f"{backend.name} failed: {exc.__class__.__name__}: {exc}")
        finally:
            writer.close()

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
    response = json_error(408, message)
    response.force_close()
    return response


class _Refused(Exception):
    """The replica refused the connection: the request was not sent."""


@dataclass
class _Attempt:
    """Whether any of the client's tries sent the request's head: aiohttp, as Go's transport,
    tries an idempotent request again on a new connection when a reused one fails, so a
    refused connection may follow a try that reached the replica."""

    sent: bool = False


def _sent_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def headers_sent(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, __: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        if isinstance(ctx.trace_request_ctx, _Attempt):
            ctx.trace_request_ctx.sent = True

    trace.on_request_headers_sent.append(headers_sent)
    return trace


@dataclass(frozen=True)
class _Clocks:
    """A request's response-start and idle limits in seconds (None: none). Knative's idle clock
    starts with the request and restarts at every write to the client, so before the first byte
    it bounds the response start too (serving pkg/http/handler/timeout.go)."""

    start: float | None
    idle: float | None
    start_is_idle: bool = False

    @classmethod
    def of(cls, backend: Backend) -> _Clocks:
        idle = backend.idle_timeout_seconds or None
        start = backend.response_start_timeout_seconds or None
        if idle is not None and (start is None or idle < start):
            return cls(idle, idle, start_is_idle=True)
        return cls(start, idle)

    @property
    def start_field(self) -> str:
        return "idleTimeoutSeconds" if self.start_is_idle else "responseStartTimeoutSeconds"

    def idle_message(self, name: str) -> str:
        return f"{name} sent nothing for idleTimeoutSeconds ({self.idle:g}s)"


def _timed_out(name: str, field: str, limit: float) -> web.Response:
    """504 before the response started, naming the timeout that ran out and its value."""
    return json_error(504, f"{name}: {field} ({limit:g}s) ran out", timeout=field)


def _timeout_message(backend: Backend) -> str:
    return f"{backend.name} did not finish within timeoutSeconds ({backend.timeout_seconds:g}s)"


async def _end(request: web.Request, response: web.StreamResponse, message: str) -> None:
    """End a started response after a timeout: the timeout message after what was sent, then
    the end of the (chunked) body, as Knative's timeout handler does. A response that declared
    its length cannot end early: its connection is cut, as Go's server cuts it."""
    if response.content_length is not None:
        _cut(request)
        return
    await response.write(error_body(message))
    await response.write_eof()


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _probe_response(answer: queue_proxy.ProbeAnswer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body)
    if answer.body:
        response.content_type = "text/plain"
    response.headers.update(answer.headers or {})
    return response


_T = TypeVar("_T")


async def _aiter(items: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
