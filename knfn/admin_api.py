"""The admin API on its own loopback port: /status (JSON), /metrics (Prometheus), / (dashboard).

Listening on 127.0.0.1 is not enough: a web page can point a name of its own at 127.0.0.1 (DNS
rebinding) and then read /events as same-origin. So requests are served only when their Host is
a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``, each with or without a port), as
Jupyter and Vite check theirs; anything else is refused with 421 naming the host.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from knfn.metrics import REGISTRY

Status = Callable[[], Awaitable[dict[str, Any]]]
Events = Callable[[int], Awaitable[list[dict[str, Any]]]]

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
        return web.json_response(
            {
                "error": f"host {host!r} is not served here; use 127.0.0.1 or localhost",
                "host": host,
            },
            status=421,
        )
    return await handler(request)


def build(status: Status, events: Events) -> web.Application:
    """The admin application over the runtime's status() and events(limit)."""

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(await status())

    async def get_events(request: web.Request) -> web.Response:
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 0 < int(raw) <= 10_000:
            return web.json_response({"error": "limit must be an integer 1..10000"}, status=400)
        return web.json_response({"events": await events(int(raw))})

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text=render(await status()), content_type="text/html")

    app = web.Application(middlewares=[loopback_hosts_only])
    app.router.add_get("/status", get_status)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/events", get_events)
    app.router.add_get("/", dashboard)
    return app


def render(status: dict[str, Any]) -> str:
    """A small self-refreshing HTML table of services and revisions."""
    rows = []
    for svc in status.get("services", []):
        for rev in svc["revisions"]:
            cells = (
                svc["name"], rev["name"], f"{rev['traffic_percent']}%", rev.get("tag") or "",
                rev["desired_replicas"], rev["ready_replicas"], rev["in_flight"],
            )  # fmt: skip
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
            )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("service", "revision", "traffic", "tag", "desired", "ready", "in flight")
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>"
        "<title>knfn</title><style>body{font-family:sans-serif}td,th{padding:2px 10px;"
        "text-align:left}</style></head><body><h1>knfn</h1>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table></body></html>"
    )
