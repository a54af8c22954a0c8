"""Tiny real functions that exercise the kit's HTTP boundary in the tests next to this file."""

from __future__ import annotations

import flask
import kit
from cloudevents.http import CloudEvent
from kit import binding, handlers
from kit import logging as kit_logging
from kit.errors import Unprocessable

log = kit_logging.get_logger("tiny")


@kit.cloudevent_function
def consumer(event: CloudEvent) -> CloudEvent | None:
    """Reply to `ping`, refuse `bad`, crash on `boom`, acknowledge anything else."""
    log.info("consumed")
    if event["type"] == "ping":
        return binding.new_event(type="pong", source="/tiny", data={"to": event["id"]}, id="r1")
    if event["type"] == "bad":
        raise Unprocessable("cannot use this one", ce_id=event["id"])
    if event["type"] == "boom":
        raise RuntimeError("secret internals")
    return None


@kit.http_function
def upload(request: flask.Request) -> flask.Response:
    """Echo the size of a body read with a 10-byte limit, then what Flask parses of it."""
    handlers.require_method(request, "POST")
    body = handlers.read_body(request, 10)
    return handlers.json_response({"size": len(body), "form": dict(request.form)})
