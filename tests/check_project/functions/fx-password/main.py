"""Breaks factor 3 (config): the password is written in the code."""

from __future__ import annotations

import flask

ADMIN_PASSWORD = "hunter2-but-longer"


def handle(request: flask.Request) -> tuple[str, int]:
    if request.headers.get("X-Password") != ADMIN_PASSWORD:
        return "who are you?\n", 401
    return "welcome\n", 200
