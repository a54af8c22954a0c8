"""dead-letters: keep the events Knative gave up delivering, for inspection and replay.

- `POST /`: a dead-lettered CloudEvent (binary or structured), as a Broker or Trigger
  `deadLetterSink` sends it. It is stored with its attributes, extensions and data, and the
  dispatcher's verdict decoded into columns: `knativeerrordest` (the URL that failed),
  `knativeerrorcode` (its last status, an integer) and `knativeerrordata` (its answer, base64
  on the wire, stored as text when it is UTF-8). Storing is idempotent on (source, id).
  Answered with an empty 204.
- `GET /`: the stored dead letters as JSON, newest first (`?limit=` 1..100, default 20).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import flask
import kit
from cloudevents.http import CloudEvent
from kit import config, db, handlers
from kit import logging as kit_logging
from kit.errors import BadRequest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
CORE_ATTRIBUTES = {"id", "source", "specversion", "type", "datacontenttype", "dataschema"}
CORE_ATTRIBUTES |= {"subject", "time"}


@dataclass(frozen=True)
class Settings:
    """What dead-letters reads from its environment."""

    log: kit_logging.LogSettings
    database: db.DatabaseSettings


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
DATABASE = db.Database(SETTINGS.database, name="dead-letters")
log = kit_logging.get_logger("dead-letters")

INSERT = """
    INSERT INTO dead_letters (
        source, id, type, subject, time, specversion, datacontenttype, attributes, extensions,
        data_encoding, data_json, data_text, error_dest, error_code, error_data
    ) VALUES (
        %(source)s, %(id)s, %(type)s, %(subject)s, %(time)s, %(specversion)s,
        %(datacontenttype)s, %(attributes)s, %(extensions)s, %(data_encoding)s, %(data_json)s,
        %(data_text)s, %(error_dest)s, %(error_code)s, %(error_data)s
    )
    ON CONFLICT (source, id) DO NOTHING
    RETURNING 1
"""

SELECT = """
    SELECT source, id, type, subject, time, specversion, datacontenttype, attributes,
           extensions, data_encoding, data_json, data_text, error_dest, error_code, error_data,
           received_at
    FROM dead_letters
    ORDER BY received_at DESC, source, id
    LIMIT %s
"""


def error_code(raw: Any) -> int | None:
    """knativeerrorcode as an integer (None when absent, not a number or not an HTTP status)."""
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 3):
        return None
    return int(text)


def error_data(raw: Any) -> str | None:
    """knativeerrordata: base64 of the failed answer; its text when that is UTF-8, else as sent."""
    if raw is None:
        return None
    try:
        return base64.b64decode(str(raw), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return str(raw)


def row_for(event: CloudEvent) -> dict[str, Any]:
    """The dead_letters row for a received event."""
    attributes = {k: v for k, v in event.get_attributes().items() if v is not None}
    extensions = {k: v for k, v in attributes.items() if k not in CORE_ATTRIBUTES}
    encoding, data = handlers.describe_data(event.get_data())
    return {
        "source": event["source"],
        "id": event["id"],
        "type": event["type"],
        "subject": attributes.get("subject"),
        "time": attributes.get("time"),
        "specversion": event["specversion"],
        "datacontenttype": attributes.get("datacontenttype"),
        "attributes": Jsonb(attributes),
        "extensions": Jsonb(extensions),
        "data_encoding": encoding,
        "data_json": Jsonb(data) if encoding == "json" else None,
        "data_text": data if encoding in ("text", "base64") else None,
        "error_dest": attributes.get("knativeerrordest"),
        "error_code": error_code(attributes.get("knativeerrorcode")),
        "error_data": error_data(attributes.get("knativeerrordata")),
    }


def store(event: CloudEvent) -> None:
    """Insert the dead letter unless its (source, id) is stored already."""
    row = row_for(event)
    with DATABASE.connection() as conn:
        inserted = conn.execute(INSERT, row).fetchone() is not None
    log.warning(
        "dead letter stored" if inserted else "dead letter already stored",
        error_dest=row["error_dest"],
        error_code=row["error_code"],
    )


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored dead letter as the GET listing shows it."""
    encoding = row["data_encoding"]
    return {
        "source": row["source"],
        "id": row["id"],
        "type": row["type"],
        "subject": row["subject"],
        "time": row["time"],
        "attributes": row["attributes"],
        "extensions": row["extensions"],
        "data_encoding": encoding,
        "data": row["data_json"] if encoding == "json" else row["data_text"],
        "error": {"dest": row["error_dest"], "code": row["error_code"], "data": row["error_data"]},
        "received_at": row["received_at"].isoformat(),
    }


def limit_of(request: flask.Request) -> int:
    """`?limit=` in 1..100 (default 20); 400 otherwise."""
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_LIMIT):
        raise BadRequest(
            f"limit must be an integer from 1 to {MAX_LIMIT}", parameter="limit", value=raw
        )
    return int(raw)


def list_dead_letters(limit: int) -> list[dict[str, Any]]:
    """The newest `limit` dead letters."""
    with DATABASE.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(SELECT, (limit,)).fetchall()
    return [as_json(row) for row in rows]


@kit.http_function
def dead_letters(request: flask.Request) -> flask.Response:
    """POST stores a dead-lettered event; GET lists what is stored."""
    handlers.require_method(request, "GET", "HEAD", "POST")
    if request.method == "POST":
        store(handlers.parse_event(request))
        return handlers.event_response(None)
    limit = limit_of(request)
    return handlers.json_response({"items": list_dead_letters(limit), "limit": limit})
