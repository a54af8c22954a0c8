"""Breaks factor 6 (processes): a global counter, changed by every request."""

from __future__ import annotations

import flask

visits = 0


def handle(request: flask.Request) -> str:
    global visits
    visits += 1
    return f"you are visitor number {visits}\n"
