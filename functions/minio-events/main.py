"""minio-events: turn MinIO bucket notifications into CloudEvents.

MinIO's webhook target POSTs `{"EventName", "Key": "<bucket>/<key>", "Records": [...]}` with
`Authorization: Bearer <token>`; that is not a CloudEvent. This function checks the token
(MINIO_WEBHOOK_TOKEN) and sends one CloudEvent per record to K_SINK, mapped as the
CloudEvents AWS S3 adapter says (cloudevents/spec, adapters/aws-s3.md):

| attribute | value |
|---|---|
| id | responseElements x-amz-request-id + "." + x-amz-id-2 |
| source | eventSource + "." + awsRegion + "." + s3.bucket.name |
| type | "com.amazonaws.s3." + eventName without MinIO's `s3:` prefix (`ObjectCreated:Put`) |
| subject | s3.object.key, URL-decoded |
| time | eventTime |
| data | the record, as JSON |

The id comes from the S3 request, so MinIO retrying a notification sends the same ids and
consumers that dedupe on (source, id) see it once. MinIO probes the endpoint with a HEAD when
the target is configured, and may POST an empty body: both get a 200.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Any

import flask
import kit
from cloudevents.http import CloudEvent
from kit import binding, config, events, handlers
from kit import logging as kit_logging
from kit.errors import BadRequest, Unauthorized

TYPE_PREFIX = "com.amazonaws.s3."


@dataclass(frozen=True)
class Settings:
    """What minio-events reads from its environment."""

    log: kit_logging.LogSettings
    sink: events.SinkSettings
    token: Annotated[
        str, config.env("MINIO_WEBHOOK_TOKEN", config.non_empty, secret=True, doc="bearer token")
    ]


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
EMITTER = events.Emitter(SETTINGS.sink)
log = kit_logging.get_logger("minio-events")


def authorized(header: str | None, token: str) -> bool:
    """Whether `Authorization` is `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def _text(record: dict[str, Any], *path: str) -> str:
    """The string at `path` inside the record; 400 naming the path when it is missing."""
    value: Any = record
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    if not isinstance(value, str) or value == "":
        raise BadRequest(f"record is missing {'.'.join(path)}", field=".".join(path))
    return value


def to_cloudevent(record: Any) -> CloudEvent:
    """One S3 notification record as a CloudEvent (the AWS S3 adapter mapping)."""
    if not isinstance(record, dict):
        raise BadRequest("each record must be a JSON object")
    request_id = _text(record, "responseElements", "x-amz-request-id")
    id_2 = _text(record, "responseElements", "x-amz-id-2")
    source = ".".join(
        (
            _text(record, "eventSource"),
            str(record.get("awsRegion") or ""),
            _text(record, "s3", "bucket", "name"),
        )
    )
    return binding.new_event(
        id=f"{request_id}.{id_2}",
        source=source,
        # MinIO writes "s3:ObjectCreated:Put" where AWS writes "ObjectCreated:Put"; dropping the
        # prefix gives the adapter's AWS types, so one Trigger filter fits both sources.
        type=TYPE_PREFIX + _text(record, "eventName").removeprefix("s3:"),
        subject=urllib.parse.unquote_plus(_text(record, "s3", "object", "key")),
        time=_text(record, "eventTime"),
        data=record,
    )


def records_of(body: bytes) -> list[Any]:
    """The notification's records; [] for an empty body; 400 if it is not a notification."""
    if not body.strip():
        return []
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # incl. JSONDecodeError, UnicodeError
        raise BadRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object with Records")
    records = document.get("Records")
    if not isinstance(records, list):
        raise BadRequest("body has no Records list", field="Records")
    return records


@kit.http_function
def minio_events(request: flask.Request) -> flask.Response:
    """Check the token, convert every record, send them to K_SINK; 200 with the count."""
    handlers.require_method(request, "POST", "HEAD", "GET")
    if request.method != "POST":
        return handlers.json_response({"ready": True})
    if not authorized(request.headers.get("Authorization"), SETTINGS.token):
        raise Unauthorized("missing or wrong bearer token", header="Authorization")
    converted = [to_cloudevent(record) for record in records_of(request.get_data())]
    emitted = 0
    for event in converted:
        try:
            EMITTER.emit(event)
        except events.EmitError as error:
            error.fields.update(emitted=emitted, records=len(converted))
            raise
        emitted += 1
    log.info("notification converted", emitted=emitted)
    return handlers.json_response({"emitted": emitted})
