"""The HTTP server under the gateway and the admin API: a header read timeout, JSON parse errors.

aiohttp answers a request it cannot parse from its protocol object, before any application
middleware runs, with a text/plain body; and it has no header read timeout, so a client that
sends its headers one byte at a time keeps a connection open for as long as it likes. Both are
fixed here, in a subclass of aiohttp's per-connection ``RequestHandler``:

- Parse errors become ``{"error": ...}`` JSON: 431 when the request line or a header is longer
  than the parser takes or there are too many headers (Go's net/http, which Knative's servers
  run on, answers 431 for anything past ``MaxHeaderBytes``), 400 otherwise.
- Headers must be complete within ``header_timeout`` of the connection opening, or of the first
  byte of a later request on a kept-alive connection; otherwise 408 and the connection is
  closed. Knative's activator and queue-proxy serve through knative.dev/pkg ``network.NewServer``
  (network/server.go, formerly h2c.go; used in cmd/activator/main.go and
  pkg/queue/sharedmain/main.go), whose only timeout is ``ReadHeaderTimeout: time.Minute``, so the
  default here is a minute too. Bodies are the gateway's business (see gateway.py).
- HTTP/2 with prior knowledge (a connection that opens with the ``PRI * HTTP/2.0`` preface, as
  gRPC clients and ``curl --http2-prior-knowledge`` send) gets an HTTP/2 answer it understands:
  the server preface and a GOAWAY with ``HTTP_1_1_REQUIRED`` (RFC 9113 7), then the connection
  closes; clients then retry over HTTP/1.1 or report why. Knative serves h2c (knative.dev/pkg
  network/h2c.go) because its pods may speak it; a knfn replica is gunicorn, HTTP/1.1 only.
"""

from __future__ import annotations

import asyncio
import socket
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from hyperframe.frame import GoAwayFrame, SettingsFrame

from knfn.responses import error_body, json_error

HEADER_TIMEOUT = 60.0  # knative.dev/pkg network.NewServer: ReadHeaderTimeout
TOO_LARGE = 431
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 3.4
HTTP_1_1_REQUIRED = 0xD  # RFC 9113 7: error code


def h2_refusal() -> bytes:
    """What an HTTP/2 client is told: an empty SETTINGS frame (the server preface), then GOAWAY
    with HTTP_1_1_REQUIRED and no stream processed."""
    goaway = GoAwayFrame(
        0, last_stream_id=0, error_code=HTTP_1_1_REQUIRED,
        additional_data=b"knfn serves HTTP/1.1 only (its replicas are gunicorn)",
    )  # fmt: skip
    return bytes(SettingsFrame(0).serialize() + goaway.serialize())


def parse_error_status(exc: BaseException | None, status: int) -> int:
    """431 for headers (or request line) past the parser's limits; else what aiohttp chose."""
    if isinstance(exc, LineTooLong):
        return TOO_LARGE
    if exc is not None and "Too many headers" in str(exc):
        return TOO_LARGE
    return status


class _Protocol(RequestHandler):
    """aiohttp's connection handler, with JSON errors and a header read timeout."""

    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0  # requests parsed when the timer started
        self._first = True  # no byte received yet: an HTTP/2 preface is looked for

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._first and self.transport is not None:
            self._first = False
            # The preface's first line is 16 bytes; a client sends the preface in one write.
            if data.startswith(H2_PREFACE[:16]):
                self._stop_header_timer()
                self.transport.write(h2_refusal())
                self.force_close()
                self.transport.close()
                return
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._stop_header_timer()  # a request's headers are complete
        elif self._header_timer is None and self._waiter is not None and not self._waiter.done():
            # Idle on a kept-alive connection and the next request has begun: time its headers.
            # While a request is being handled (its body arriving) the waiter is None.
            self._start_header_timer()

    def _start_header_timer(self) -> None:
        if self._header_timeout > 0:
            self._header_count = self._request_count
            self._header_timer = self._loop.call_later(self._header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._request_count != self._header_count or self.transport is None:
            return
        body = error_body(f"request headers not received within {self._header_timeout:g}s")
        head = (
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a parse error (or an unhandled exception), as JSON."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:  # a client's malformed request: not knfn's fault, no traceback in its output
            self.log_debug("Bad request from %s: %s", request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; the connection is cut instead")
        status = parse_error_status(exc, status)
        if status >= 500:
            detail = f"{HTTPStatus(status).phrase} (see knfn's output)"
        else:
            detail = exc.message if isinstance(exc, HttpProcessingError) else str(exc or message)
        if status == TOO_LARGE:
            detail = f"request header fields too large: {detail}"
        response = json_error(status, detail)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's connection factory, making :class:`_Protocol` connections."""

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections time headers out and answer parse errors in JSON."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        shutdown_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            app, access_log=None, shutdown_timeout=shutdown_timeout, header_timeout=header_timeout
        )

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application builds aiohttp's own Server; only its connection factory differs.
        server.__class__ = _Server
        return server


async def serve(
    app: web.Application,
    port: int,
    *,
    sock: socket.socket | None = None,
    header_timeout: float = HEADER_TIMEOUT,
    shutdown_timeout: float = 60.0,
) -> Runner:
    """Serve app on 127.0.0.1:port, or on ``sock`` when the caller bound it already; the caller
    calls ``cleanup()`` on the runner to stop (it waits up to shutdown_timeout for requests in
    flight, as ``web.AppRunner`` does)."""
    runner = Runner(app, header_timeout=header_timeout, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.SockSite(runner, sock) if sock else web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner
