"""The admin API on its own loopback port: /status (JSON), /metrics (Prometheus), /events (the
broker's deliveries, one event inspected, replay: knfn/events_api.py), / (the dashboard:
knfn/dashboard/).

Listening on 127.0.0.1 is not enough: a web page can point a name of its own at 127.0.0.1 (DNS
rebinding) and then read /events as same-origin. So requests are served only when their Host is
a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``, each with or without a port), as
Jupyter and Vite check theirs; anything else is refused with 421 naming the host.

A request that changes state (any method but GET, HEAD, OPTIONS: replay) must also come from
the admin API's own page or from no page at all: its ``Origin``, when sent, must be this
server's own origin (``http://`` + the loopback Host); ``Sec-Fetch-Site``, when sent, must be
``same-origin`` or ``none``; and its body must be declared ``application/json``, which no HTML
form can send and which a cross-origin ``fetch`` may send only after a CORS preflight that this
API never grants. Anything else is refused with 403 JSON saying which check failed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from knfn import dashboard, events_api
from knfn.metrics import REGISTRY
from knfn.responses import json_error

Status = Callable[[], Awaitable[dict[str, Any]]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE = frozenset({"same-origin", "none"})

# Host header names served (RFC 9110 7.2: a host, optionally a port; names compare caselessly).
LOOPBACK_HOST = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?", re.IGNORECASE)


def is_loopback_host(host: str | None) -> bool:
    """Whether a Host header value names this machine's loopback interface."""
    return host is not None and LOOPBACK_HOST.fullmatch(host) is not None


@web.middleware
async def loopback_hosts_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """421 (Misdirected Request) for a Host that is not a loopback name."""
    host = request.headers.get("Host")
    if not is_loopback_host(host):
        return json_error(
            421, f"host {host!r} is not served here; use 127.0.0.1 or localhost", host=host
        )
    return await handler(request)


def cross_origin_refusal(
    method: str,
    host: str,
    origin: str | None,
    fetch_site: str | None,
    content_type: str,
) -> str | None:
    """Why a request must be refused as possibly cross-origin, or None when it may go on.

    Only state-changing methods are checked; host is the (already loopback-checked) Host."""
    if method.upper() in SAFE_METHODS:
        return None
    if origin is not None and origin.lower() != f"http://{host}".lower():
        return f"origin {origin!r} may not change state here; only http://{host} may"
    if fetch_site is not None and fetch_site.lower() not in SAME_SITE:
        return f"a {fetch_site} request may not change state here (Sec-Fetch-Site)"
    if content_type.split(";")[0].strip().lower() != "application/json":
        return f"the body must be sent as application/json, not {content_type or 'nothing'!r}"
    return None


@web.middleware
async def same_origin_writes(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """403 JSON for a state-changing request that may come from another origin's page."""
    why = cross_origin_refusal(
        request.method,
        request.headers.get("Host", ""),
        request.headers.get("Origin"),
        request.headers.get("Sec-Fetch-Site"),
        request.headers.get("Content-Type", ""),
    )
    if why is not None:
        return json_error(403, why)
    return await handler(request)


def build(status: Status, events: events_api.EventLog) -> web.Application:
    """The admin application over the runtime's status() and its broker's event log."""

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(await status())

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # Hosts first (421), then the origin of writes (403).
    app = web.Application(middlewares=[loopback_hosts_only, same_origin_writes])
    app.router.add_get("/status", get_status)
    app.router.add_get("/metrics", get_metrics)
    events_api.add_routes(app, events)
    dashboard.add_routes(app)
    return app
