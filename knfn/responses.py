"""What every HTTP face of knfn shares: the handler type and the JSON error answer.

The gateway, the broker ingress, the flows, the admin API and the HTTP server's own parse
errors all answer an error as ``{"error": "<message>", ...}`` with ``application/json``; this is
the one place that body is made, so a client parses every face's errors the same way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

# A request handler of an aiohttp application (the gateway's local routes and faces).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(message: str, **extra: object) -> bytes:
    """The JSON error body: ``{"error": message}`` and any extra fields (e.g. ``timeout``)."""
    return json.dumps({"error": message, **extra}).encode()


def json_error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: object
) -> web.Response:
    """An error answer with the JSON error body."""
    return web.Response(
        status=status,
        body=error_body(message, **extra),
        content_type="application/json",
        headers=headers,
    )
