"""The one boundary between a function and HTTP: log context, errors to statuses, replies.

Every function here runs with FUNCTION_SIGNATURE_TYPE=http. `@http_function` wraps a plain
handler; `@cloudevent_function` turns `fn(event) -> CloudEvent | None` into one, because a
Knative broker treats a non-empty 2xx reply that is not a CloudEvent (functions-framework's
cloudevent signature answers "OK") as a failed delivery. Here a consumer answers either with
its reply event in binary mode (200) or with an empty 204.

Exceptions become responses in exactly one place (`_guarded`): a `KitError` gives its status
and JSON body; the errors that only hostile input causes (`client_error`: JSON nested too
deep, a number with thousands of digits, text Postgres cannot hold, a value out of a column's
range) a 400 naming the problem; anything else a 500 JSON body and a logged traceback.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from io import BytesIO
from typing import Any

import flask
import psycopg
import werkzeug.exceptions
import werkzeug.wsgi
from cloudevents.http import CloudEvent

from kit import binding
from kit import logging as kit_logging
from kit.errors import (
    BadRequest,
    KitError,
    MethodNotAllowed,
    PayloadTooLarge,
    Unprocessable,
    response_for,
)

HTTPHandler = Callable[[flask.Request], flask.Response]
EventHandler = Callable[[CloudEvent], CloudEvent | None]
log = kit_logging.get_logger(__name__)


def http_function(fn: HTTPHandler) -> HTTPHandler:
    """Wrap an HTTP handler: bind the execution id for logs and map errors to JSON answers."""

    @functools.wraps(fn)
    def handler(request: flask.Request) -> flask.Response:
        with _scope(request):
            return _guarded(lambda: fn(request))

    return handler


def cloudevent_function(fn: EventHandler) -> HTTPHandler:
    """Wrap a CloudEvent consumer as an HTTP handler (binary or structured events in)."""

    @functools.wraps(fn)
    def handler(request: flask.Request) -> flask.Response:
        with _scope(request):
            return _guarded(lambda: event_response(fn(parse_event(request))))

    return handler


def _scope(request: flask.Request) -> AbstractContextManager[str]:
    """The log context of one request: its execution id, method and path."""
    execution_id = request.headers.get(kit_logging.EXECUTION_ID_HEADER)
    return kit_logging.request_scope(execution_id, method=request.method, path=request.path)


def parse_event(request: flask.Request) -> CloudEvent:
    """The CloudEvent in a POST request, with its id, type and source bound for logging."""
    require_method(request, "POST")
    event = binding.from_http(dict(request.headers.items()), request.get_data())
    kit_logging.bind(ce_id=event["id"], ce_type=event["type"], ce_source=event["source"])
    log.debug("event received", ce_subject=event.get("subject"))
    return event


def event_response(event: CloudEvent | None) -> flask.Response:
    """The reply to a delivery: the event in binary mode (200), or an empty 204."""
    if event is None:
        return flask.Response(status=204)
    message = binding.to_binary(event)
    response = flask.Response(message.body, status=200)
    for name, value in message.headers.items():
        response.headers[name] = value
    return response


def json_response(document: Any, status: int = 200) -> flask.Response:
    """A JSON answer with a trailing newline (pleasant in curl)."""
    return flask.Response(
        json.dumps(document, default=str) + "\n", status=status, mimetype="application/json"
    )


def require_method(request: flask.Request, *allowed: str) -> None:
    """Raise 405 (with `Allow`) unless the request uses one of `allowed`."""
    if request.method not in allowed:
        raise MethodNotAllowed(request.method, allowed)


def read_body(request: flask.Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without buffering more than that.

    The declared Content-Length is checked first; the bytes actually read are checked too
    (chunked uploads declare nothing). The body is then handed back to the WSGI environ, so
    `request.files`/`request.form` parse it as usual and the framework's end-of-request drain
    reads it from memory instead of the socket.
    """
    environ = request.environ
    declared = environ.get("CONTENT_LENGTH") or None
    if declared is not None and _too_long(declared, limit):
        _replace_body(environ, b"")
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes",
            limit=limit,
            size=declared.strip(),
        )
    stream = werkzeug.wsgi.get_input_stream(environ)
    body = stream.read(limit + 1)
    if len(body) > limit:
        _replace_body(environ, b"")
        raise PayloadTooLarge(
            f"request body exceeds the limit of {limit} bytes", limit=limit, size=f">{limit}"
        )
    _replace_body(environ, body)
    return body


def _too_long(declared: str, limit: int) -> bool:
    """Whether a Content-Length says more than limit (digits only; no giant int parsing)."""
    digits = declared.strip()
    if not (digits.isascii() and digits.isdigit()):
        return False
    return len(digits.lstrip("0")) > len(str(limit)) or int(digits) > limit


def _replace_body(environ: dict[str, Any], body: bytes) -> None:
    environ["wsgi.input"] = BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def data_object(event: CloudEvent) -> dict[str, Any]:
    """The event's data as a JSON object, or 422 naming the event: consumers expect objects."""
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        with contextlib.suppress(ValueError, RecursionError):  # not JSON: the 422 below
            data = json.loads(data)
    if not isinstance(data, dict):
        raise Unprocessable(
            f"event {event['id']} data must be a JSON object",
            ce_id=event["id"],
            ce_type=event["type"],
        )
    return data


def require_fields(
    event: CloudEvent, data: dict[str, Any], fields: Iterable[tuple[str, type | tuple[type, ...]]]
) -> None:
    """422 listing every field of `data` that is missing or has the wrong JSON type."""
    problems = []
    for name, kind in fields:
        value = data.get(name)
        if value is None:
            problems.append(f"missing {name}")
        elif not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            problems.append(f"{name} has the wrong type")
    if problems:
        raise Unprocessable(
            f"event {event['id']} data is invalid: " + ", ".join(problems),
            ce_id=event["id"],
            ce_type=event["type"],
            problems=problems,
        )


def describe(event: CloudEvent) -> dict[str, Any]:
    """A JSON-friendly view of an event: attributes, extensions and decoded data.

    Data is shown as JSON when it is JSON, as text when it is UTF-8, else as base64;
    `data_encoding` says which.
    """
    attributes = dict(event.get_attributes())
    core = {"id", "source", "specversion", "type", "datacontenttype", "dataschema"}
    core |= {"subject", "time"}
    extensions = {k: v for k, v in attributes.items() if k not in core}
    for name in extensions:
        attributes.pop(name)
    encoding, data = describe_data(event.get_data())
    return {
        "attributes": attributes,
        "extensions": extensions,
        "data_encoding": encoding,
        "data": data,
    }


def describe_data(data: Any) -> tuple[str | None, Any]:
    """(encoding, value) for event data: ("json", obj), ("text", str), ("base64", str)."""
    if data is None:
        return None, None
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64", base64.b64encode(raw).decode("ascii")
        if "\x00" not in text:  # text with a NUL is no text Postgres can store
            return "text", text
        return "base64", base64.b64encode(raw).decode("ascii")
    if isinstance(data, str):
        if "\x00" in data:
            return "base64", base64.b64encode(data.encode("utf-8", "replace")).decode("ascii")
        return "text", data
    return "json", data


def client_error(error: Exception) -> BadRequest | None:
    """The 400 for an exception that input alone causes, whatever the function; else None.

    Python raises RecursionError on JSON nested about 1,000 deep and ValueError on an integer
    of more than 4,300 digits (sys.int_info.str_digits_check_threshold); psycopg raises
    DataError for a NUL in text and for a value out of a column's range, and the codec
    UnicodeEncodeError for a lone surrogate. None of these is the function's fault.
    """
    if isinstance(error, RecursionError):
        return BadRequest("the input is nested too deeply to be read")
    if isinstance(error, UnicodeEncodeError):
        return BadRequest(f"the input holds text that is not valid Unicode: {error.reason}")
    if isinstance(error, psycopg.DataError):
        problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return BadRequest(f"the input holds a value the database cannot store: {problem}")
    if isinstance(error, ValueError) and "integer string conversion" in str(error):
        return BadRequest("the input holds a number with too many digits")
    return None


def _guarded(call: Callable[[], flask.Response]) -> flask.Response:
    """Run the handler; turn every exception into a JSON answer and log the outcome."""
    started = time.monotonic()
    try:
        response = call()
    except KitError as error:
        response = response_for(error)
        level = log.warning if error.status < 500 else log.error
        level("request failed", status=error.status, error=error.message)
    except werkzeug.exceptions.HTTPException as error:
        status = error.code or 500
        response = response_for(KitError(error.description or error.name, status=status))
        log.warning("request failed", status=status, error=error.description)
    except Exception as error:
        refused = client_error(error)
        if refused is not None:
            response = response_for(refused)
            log.warning("request failed", status=refused.status, error=refused.message)
        else:
            log.exception("unhandled error", error=repr(error))
            response = response_for(KitError(f"internal error: {type(error).__name__}"))
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    log.debug("request handled", status=response.status_code, duration_ms=duration_ms)
    return response
