"""The dashboard on the admin port: one page that polls /status, /metrics and /events.

What it shows: Services, their revisions and traffic; per revision, desired vs ready replicas,
in-flight requests, the request rate and (when /status carries them) the KPA's stable and panic
averages against its target, as live charts; cold starts; the KPA state (panic mode and since
when, excess burst capacity, whether the activator is in the path); Brokers and Triggers with
queue depth and dead letters; and the event inspector (every delivery and attempt of an event,
replay). The page reads the JSON endpoints once a second; nothing reloads.

Why plotly.js, served from the ``plotly`` wheel: the charts must work offline and nothing may
need Node on the user's machine, so the chart code has to come from a maintained PyPI package.
plotly's wheel ships the whole plotly.min.js (``plotly/package_data``), versioned with the
wheel, so pinning ``plotly`` pins the JavaScript; it draws SVG (which a browser test can read
back: the plotted data is on the chart's element) and ``Plotly.react`` redraws a chart in place
as points arrive. Rendering SVG on the server would have meant keeping each chart's history in
knfn and re-sending whole charts every second; polling keeps knfn's side to the JSON it already
serves, and the history lives in the page (the last five minutes).

The page's HTML, JavaScript and CSS are package data in ``static/``, served as files.
"""

from __future__ import annotations

import importlib.resources
from functools import cache

from aiohttp import web

from knfn.responses import json_error

STATIC = importlib.resources.files(__name__) / "static"
# Files served from static/ and their types; nothing else is (no directory listing, no paths).
FILES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
PLOTLY = "plotly.min.js"


@cache
def _file(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@cache
def plotly_js() -> bytes:
    """plotly.min.js as the installed plotly wheel ships it."""
    return (importlib.resources.files("plotly") / "package_data" / PLOTLY).read_bytes()


def add_routes(app: web.Application) -> None:
    """/ (the page) and /static/<file> on app."""

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            body=_file("index.html"),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == PLOTLY:
            body, kind = plotly_js(), "text/javascript"
        elif name in FILES:
            body, kind = _file(name), FILES[name]
        else:
            return json_error(404, f"no static file {name!r}")
        return web.Response(
            body=body, content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"}
        )

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
