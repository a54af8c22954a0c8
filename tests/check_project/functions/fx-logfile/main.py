"""Breaks factor 11 (logs): the log goes to a file instead of stdout."""

from __future__ import annotations

import logging

import flask

logging.basicConfig(filename="app.log", level=logging.INFO)
log = logging.getLogger("fx-logfile")


def handle(request: flask.Request) -> str:
    log.info("handled %s", request.path)
    return "logged\n"
