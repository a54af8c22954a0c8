"""Breaks factor 9 (disposability): SIGTERM is blocked, so only SIGKILL ends it."""

from __future__ import annotations

import signal

import flask

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def handle(request: flask.Request) -> str:
    return "you cannot stop me\n"
