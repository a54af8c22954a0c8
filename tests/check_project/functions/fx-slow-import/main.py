"""Breaks factor 9 (disposability): importing it takes four seconds."""

from __future__ import annotations

import time

import flask

time.sleep(4)  # "warming a cache": every cold start waits for it


def handle(request: flask.Request) -> str:
    return "finally\n"
