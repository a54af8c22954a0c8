"""query: read the catalog over HTTP, with presigned S3 URLs to fetch the bytes.

- `GET /` or `GET /objects`: the objects of S3_BUCKET, newest first, a page at a time
  (`?limit=` 1..100, default 20; then `?cursor=<next_cursor>` from the previous page, or
  `?offset=<n>`).
- `GET /objects/<key>`: one object, 404 if the catalog does not know it.

Each entry carries `url` (and `thumbnail_url` once there is a thumbnail): presigned GET URLs
valid for PRESIGN_EXPIRES_SECONDS, so a browser fetches the bytes from S3 directly and this
function never proxies them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import flask
import kit
from kit import config, db, handlers, s3
from kit import logging as kit_logging
from kit.errors import BadRequest, NotFound
from psycopg.rows import dict_row

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 2**63 - 1  # Postgres OFFSET is a bigint
COLUMNS = (
    "bucket, key, size, content_type, sha256, thumbnail_key, thumbnail_width,"
    " thumbnail_height, created_at, updated_at"
)


@dataclass(frozen=True)
class Settings:
    """What query reads from its environment."""

    log: kit_logging.LogSettings
    s3: s3.S3Settings
    database: db.DatabaseSettings
    bucket: Annotated[str, config.env("S3_BUCKET", config.non_empty, default="uploads")]
    presign_expires: Annotated[
        int,
        config.env("PRESIGN_EXPIRES_SECONDS", config.integer(min=1, max=604_800), default=900),
    ]


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
STORE = s3.ObjectStore(SETTINGS.s3)
DATABASE = db.Database(SETTINGS.database, name="query")
log = kit_logging.get_logger("query")


@dataclass(frozen=True)
class Page:
    """Which slice of the listing to return."""

    limit: int
    after: tuple[datetime, str] | None = None
    offset: int | None = None


def encode_cursor(created_at: datetime, key: str) -> str:
    """An opaque cursor pointing just after the row (created_at, key)."""
    raw = json.dumps([created_at.isoformat(), key]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Undo `encode_cursor`; 400 if the cursor was not made by it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, key = json.loads(raw)
        if not isinstance(key, str) or "\x00" in key:
            raise TypeError("the key is not text")
        return datetime.fromisoformat(created_at), key
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise BadRequest("cursor is not valid", parameter="cursor", value=cursor) from None


def int_parameter(request: flask.Request, name: str, low: int, high: int | None) -> int | None:
    """An integer query parameter within [low, high]; None if absent, 400 if not valid."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
    value = None
    if raw.isascii() and len(raw) <= 24:  # no giant (or non-ASCII-digit) number is parsed
        with contextlib.suppress(ValueError):
            value = int(raw, 10)
    if value is None or value < low or (high is not None and value > high):
        raise BadRequest(f"{name} must be an integer {bound}", parameter=name, value=raw)
    return value


def page_of(request: flask.Request) -> Page:
    """The page the query string asks for."""
    limit = int_parameter(request, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
    offset = int_parameter(request, "offset", 0, MAX_OFFSET)
    cursor = request.args.get("cursor")
    if cursor and offset is not None:
        raise BadRequest("use either cursor or offset, not both", parameter="cursor")
    return Page(limit=limit, after=decode_cursor(cursor) if cursor else None, offset=offset)


def entry(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row as JSON, with presigned URLs for the object and its thumbnail."""
    expires = SETTINGS.presign_expires
    item = {**row, "url": STORE.presign_get(row["bucket"], row["key"], expires)}
    if row.get("thumbnail_key"):
        item["thumbnail_url"] = STORE.presign_get(row["bucket"], row["thumbnail_key"], expires)
    item["expires_in"] = expires
    for name in ("created_at", "updated_at"):
        item[name] = row[name].isoformat()
    return item


def list_objects(page: Page) -> dict[str, Any]:
    """One page of the bucket's objects, newest first, and where the next page starts."""
    sql = f"SELECT {COLUMNS} FROM objects WHERE bucket = %s"
    params: list[Any] = [SETTINGS.bucket]
    if page.after is not None:
        sql += " AND (created_at, key) < (%s, %s)"
        params += list(page.after)
    sql += " ORDER BY created_at DESC, key DESC LIMIT %s"
    params.append(page.limit + 1)
    if page.offset is not None:
        sql += " OFFSET %s"
        params.append(page.offset)
    with DATABASE.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    last = rows[-1] if rows and more else None
    document: dict[str, Any] = {
        "bucket": SETTINGS.bucket,
        "items": [entry(row) for row in rows],
        "limit": page.limit,
        "next_cursor": encode_cursor(last["created_at"], last["key"]) if last else None,
    }
    if page.offset is not None:
        document["next_offset"] = page.offset + len(rows) if more else None
    return document


def get_object(key: str) -> dict[str, Any]:
    """One object of the bucket; 404 if the catalog has no such key."""
    with DATABASE.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {COLUMNS} FROM objects WHERE bucket = %s AND key = %s",
            (SETTINGS.bucket, key),
        ).fetchone()
    if row is None:
        raise NotFound(f"no object {key!r} in the catalog", bucket=SETTINGS.bucket, key=key)
    return entry(row)


@kit.http_function
def query(request: flask.Request) -> flask.Response:
    """Route GET / and /objects to the listing, /objects/<key> to one object."""
    handlers.require_method(request, "GET", "HEAD")
    path = request.path.rstrip("/")
    if path in ("", "/objects"):
        return handlers.json_response(list_objects(page_of(request)))
    if path.startswith("/objects/"):
        key = path.removeprefix("/objects/")
        if "\x00" in key:
            raise BadRequest("an object key cannot contain NUL", key=key)
        return handlers.json_response(get_object(key))
    raise NotFound(f"no route for {request.path}; use / , /objects or /objects/<key>")
