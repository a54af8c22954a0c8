"""Breaks factor 6 (processes): each request appends to a file beside the code."""

from __future__ import annotations

from pathlib import Path

import flask

GUESTBOOK = Path(__file__).parent / "guestbook.txt"


def handle(request: flask.Request) -> str:
    with open(GUESTBOOK, "a") as book:
        book.write(request.args.get("name", "someone") + "\n")
    return "signed\n"
