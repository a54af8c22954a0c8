"""Test functions for streaming through the gateway: server-sent events, a WebSocket echo, and
the request's headers as the function sees them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import flask
import simple_websocket

LONGEST = 30.0  # seconds any of these waits, at most
HIDDEN_UPGRADE = "streaming_function.upgrade"


def _let_websockets_reach_the_function(call: Any) -> Any:
    """functions-framework's routes are plain HTTP rules, and werkzeug answers a WebSocket
    handshake on those with 400 (WebsocketMismatch) before any function runs, in a cluster as
    here. Hide the handshake's Upgrade header from the router; echo_ws puts it back."""

    def wrapped(app: flask.Flask, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            environ[HIDDEN_UPGRADE] = environ.pop("HTTP_UPGRADE")
        return call(app, environ, start_response)

    return wrapped


flask.Flask.__call__ = _let_websockets_reach_the_function(flask.Flask.__call__)  # type: ignore[method-assign]


def sse(request: flask.Request) -> flask.Response:
    """Server-sent events. `?gate=PATH`: event one, then wait for PATH to exist, then event two
    (so a client sees one before two is produced). `?pause=S`: one, S seconds, two.
    `?delay=S`: S seconds before anything. `?ticks=N`: N events 0.5 s apart."""
    gate = request.args.get("gate")
    pause = float(request.args.get("pause", 0))
    delay = float(request.args.get("delay", 0))
    ticks = int(request.args.get("ticks", 0))
    time.sleep(min(delay, LONGEST))

    def events() -> Iterator[str]:
        yield "data: one\n\n"
        if gate:
            deadline = time.monotonic() + LONGEST
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(min(pause, LONGEST))
        for n in range(min(ticks, 60)):
            time.sleep(0.5)
            yield f"data: tick {n}\n\n"
        yield "data: two\n\n"

    return flask.Response(events(), mimetype="text/event-stream")


def echo_ws(request: flask.Request) -> flask.Response:
    """A WebSocket that sends back every message until the client closes."""
    environ = request.environ
    if HIDDEN_UPGRADE in environ:
        environ["HTTP_UPGRADE"] = environ.pop(HIDDEN_UPGRADE)
    ws = simple_websocket.Server.accept(environ)
    try:
        while True:
            message = ws.receive(timeout=LONGEST)
            if message is None:
                break
            ws.send(message)
        ws.close()
    except simple_websocket.ConnectionClosed:
        pass

    class Done(flask.Response):
        def __call__(self, *args: object, **kwargs: object) -> list[bytes]:
            # The socket was the WebSocket's: gunicorn closes it on StopIteration.
            raise StopIteration

    return Done()


def headers(request: flask.Request) -> flask.Response:
    """The request's headers, as a JSON object of lower-cased names."""
    seen = {k.lower(): v for k, v in request.headers.items()}
    return flask.Response(json.dumps(seen), mimetype="application/json")
