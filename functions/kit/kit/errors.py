"""The kit's one exception family, and how an error becomes an HTTP JSON answer.

Functions raise a `KitError` subclass wherever the problem is found; the handler boundary in
`kit.handlers` turns it into a response exactly once. Each error carries its status and any
extra fields worth showing to the caller, so the JSON body names what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import flask


class KitError(Exception):
    """Base of every error the kit and the functions raise on purpose."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.fields: dict[str, Any] = fields

    def body(self) -> dict[str, Any]:
        """The JSON document sent to the caller: the message plus the extra fields."""
        return {"error": self.message, **self.fields}


class BadRequest(KitError):
    """The request is malformed: a parameter, a body or a CloudEvent that cannot be used."""

    status = 400


class Unauthorized(KitError):
    """The caller did not prove who it is."""

    status = 401


class NotFound(KitError):
    """The thing asked for does not exist."""

    status = 404


class MethodNotAllowed(KitError):
    """The HTTP method is not one the function answers; `Allow` lists the ones it does."""

    status = 405

    def __init__(self, method: str, allowed: Iterable[str]) -> None:
        self.allowed = tuple(allowed)
        super().__init__(
            f"method {method} is not allowed", method=method, allowed=list(self.allowed)
        )


class PayloadTooLarge(KitError):
    """The request body is bigger than the configured limit."""

    status = 413


class UnsupportedMediaType(KitError):
    """The request's content type is not one the function accepts."""

    status = 415


class Unprocessable(KitError):
    """Well-formed, but the content cannot be processed (a corrupt image, event data of the
    wrong shape). A 4xx, so that a broker does not retry it."""

    status = 422


class BadGateway(KitError):
    """A service this function calls answered badly or not at all (e.g. the event sink)."""

    status = 502


class ServiceUnavailable(KitError):
    """A backing service (S3, Postgres) is unreachable; the request may succeed later."""

    status = 503


def error_response(
    status: int,
    message: str,
    fields: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> flask.Response:
    """A JSON error answer: `{"error": message, **fields}` with the given status."""
    body = {"error": message, **(fields or {})}
    response = flask.Response(
        json.dumps(body, default=str) + "\n", status=status, mimetype="application/json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def response_for(error: KitError) -> flask.Response:
    """The JSON answer for a `KitError`, with `Allow` set for a 405."""
    headers = {}
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    return error_response(error.status, error.message, error.fields, headers)
