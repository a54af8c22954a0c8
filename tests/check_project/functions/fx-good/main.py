"""Breaks no factor: config from env, nothing kept between requests, logs on stdout."""

from __future__ import annotations

import os

import flask


def handle(request: flask.Request) -> str:
    """Greet whoever the query names."""
    greeting = os.environ.get("GREETING", "hello")
    return f"{greeting}, {request.args.get('name', 'world')}\n"
