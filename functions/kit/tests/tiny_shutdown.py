"""A tiny real function whose first request opens a "resource" that records when it closes."""

from __future__ import annotations

import os
from pathlib import Path

import flask
import kit
from kit import config, shutdown
from kit import logging as kit_logging

kit_logging.configure(config.load(kit_logging.LogSettings))


def _close() -> None:
    Path(os.environ["MARKER"]).write_text(f"closed by pid {os.getpid()}\n")


@kit.http_function
def opener(request: flask.Request) -> flask.Response:
    """Register the resource (as a pool does on first use) and answer."""
    if "marker" not in shutdown.registered():
        shutdown.register("marker", _close)
    return flask.Response("opened", status=200)
