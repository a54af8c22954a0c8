"""Breaks factor 2 (dependencies): requirements.txt asks for functions-framework>=3."""

from __future__ import annotations

import flask


def handle(request: flask.Request) -> str:
    return f"hello, {request.args.get('name', 'world')}\n"
