"""catalog: keep one Postgres row per stored object, from the pipeline's events.

A CloudEvent consumer of `dev.knfn.object.stored` (bucket, key, size, content type, hash)
and `dev.knfn.thumbnail.created` (the thumbnail's key and size). Both are upserts on
(bucket, key), so it does not matter which arrives first.

Delivery is at-least-once, so each event is applied once: its (source, id) is recorded in
`processed_events` in the same transaction as the upsert. A redelivered event finds itself
there and changes nothing, not even `updated_at`. Every delivery is answered with an empty
204; other event types are acknowledged and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import kit
import psycopg
from cloudevents.http import CloudEvent
from kit import config, db, handlers
from kit import logging as kit_logging
from kit.errors import Unprocessable

CONSUMER = "catalog"
STORED_TYPE = "dev.knfn.object.stored"
THUMBNAIL_TYPE = "dev.knfn.thumbnail.created"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Settings:
    """What catalog reads from its environment."""

    log: kit_logging.LogSettings
    database: db.DatabaseSettings


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
DATABASE = db.Database(SETTINGS.database, name=CONSUMER)
log = kit_logging.get_logger("catalog")

UPSERT_STORED = """
    INSERT INTO objects (bucket, key, size, content_type, sha256)
    VALUES (%(bucket)s, %(key)s, %(size)s, %(content_type)s, %(sha256)s)
    ON CONFLICT (bucket, key) DO UPDATE SET
        size = EXCLUDED.size,
        content_type = EXCLUDED.content_type,
        sha256 = EXCLUDED.sha256,
        updated_at = now()
"""

UPSERT_THUMBNAIL = """
    INSERT INTO objects (bucket, key, thumbnail_key, thumbnail_width, thumbnail_height)
    VALUES (%(bucket)s, %(key)s, %(thumbnail_key)s, %(width)s, %(height)s)
    ON CONFLICT (bucket, key) DO UPDATE SET
        thumbnail_key = EXCLUDED.thumbnail_key,
        thumbnail_width = EXCLUDED.thumbnail_width,
        thumbnail_height = EXCLUDED.thumbnail_height,
        updated_at = now()
"""

MARK_PROCESSED = """
    INSERT INTO processed_events (consumer, source, id, type)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT DO NOTHING
    RETURNING 1
"""


def stored_row(event: CloudEvent) -> dict[str, Any]:
    """The columns an object.stored event sets; 422 naming every bad field."""
    data = handlers.data_object(event)
    handlers.require_fields(
        event,
        data,
        [("bucket", str), ("key", str), ("size", int), ("content_type", str), ("sha256", str)],
    )
    if data["size"] < 0 or not SHA256.match(data["sha256"]):
        raise Unprocessable(
            f"event {event['id']} data is invalid: size must be >= 0 and sha256 64 hex digits",
            ce_id=event["id"],
        )
    return {k: data[k] for k in ("bucket", "key", "size", "content_type", "sha256")}


def thumbnail_row(event: CloudEvent) -> dict[str, Any]:
    """The columns a thumbnail.created event sets; 422 naming every bad field."""
    data = handlers.data_object(event)
    handlers.require_fields(event, data, [("bucket", str), ("key", str), ("thumbnail_key", str)])
    for name in ("width", "height"):
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise Unprocessable(f"event {event['id']} data is invalid: {name} has the wrong type")
    return {
        "bucket": data["bucket"],
        "key": data["key"],
        "thumbnail_key": data["thumbnail_key"],
        "width": data.get("width"),
        "height": data.get("height"),
    }


def apply_once(conn: psycopg.Connection, event: CloudEvent, sql: str, row: dict[str, Any]) -> bool:
    """Record the event and apply `sql`, in the caller's transaction; False if seen before."""
    identity = (CONSUMER, event["source"], event["id"], event["type"])
    if conn.execute(MARK_PROCESSED, identity).fetchone() is None:
        return False
    conn.execute(sql, row)
    return True


@kit.cloudevent_function
def catalog(event: CloudEvent) -> CloudEvent | None:
    """Upsert the object's row for a pipeline event, exactly once per (source, id)."""
    if event["type"] == STORED_TYPE:
        sql, row = UPSERT_STORED, stored_row(event)
    elif event["type"] == THUMBNAIL_TYPE:
        sql, row = UPSERT_THUMBNAIL, thumbnail_row(event)
    else:
        log.info("event ignored: not a catalog event")
        return None
    with DATABASE.connection() as conn:
        applied = apply_once(conn, event, sql, row)
    if applied:
        log.info("catalog updated", bucket=row["bucket"], key=row["key"])
    else:
        log.info("event already processed", bucket=row["bucket"], key=row["key"])
    return None
