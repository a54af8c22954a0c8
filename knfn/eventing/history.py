"""What became of the broker's events, read back from its store: the admin API's side.

The write path (knfn/eventing/store.py) accepts events and moves their deliveries through
claims and outcomes; this module reads what it wrote: the latest deliveries (``GET /events``),
one event with every delivery and attempt made of it (the event inspector), and the counts per
Trigger and state (the status of Brokers, Triggers and flows). It also adds a replay's
deliveries to a stored event (knfn/eventing/replay.py chooses them). Each call takes the
caller's connection: the readers use a pool of their own, apart from the store's writer.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from knfn.errors import KnfnError
from knfn.eventing.store import CHANNEL, NewDelivery, insert_deliveries


class EventNotFound(KnfnError):
    """No stored event has this number: 404."""


@dataclass(frozen=True)
class StoredEvent:
    """An accepted event as stored: where it entered and what it is."""

    number: int
    namespace: str
    broker: str
    attributes: dict[str, str]
    data: bytes | None


async def recent(conn: psycopg.AsyncConnection[Any], limit: int) -> list[dict[str, Any]]:
    """The latest deliveries with their event's id, type and source, newest first."""
    cur = await conn.execute(
        "SELECT e.attributes->>'id', e.attributes->>'type', e.attributes->>'source',"
        " d.namespace, d.trigger, d.kind, d.destination, d.attempts, d.last_status,"
        " d.last_error, d.latency_ms, d.state, e.accepted_at, e.id, e.broker, d.replay"
        " FROM knfn_deliveries d JOIN knfn_events e ON e.id = d.event_id"
        " ORDER BY d.id DESC LIMIT %s",
        (limit,),
    )
    # event_id is the CloudEvent's id (unique only with its source); event is the stored
    # event's number, the key of /events/<number>.
    keys = (
        "event_id", "type", "source", "namespace", "trigger", "kind", "destination",
        "attempts", "last_status", "last_error", "latency_ms", "state", "accepted_at",
        "event", "broker", "replay",
    )  # fmt: skip
    return [_row(keys, row) for row in await cur.fetchall()]


async def stored(conn: psycopg.AsyncConnection[Any], number: int) -> StoredEvent:
    """The stored event with this number, or EventNotFound."""
    row = await (
        await conn.execute(
            "SELECT id, namespace, broker, attributes, data FROM knfn_events WHERE id = %s",
            (number,),
        )
    ).fetchone()
    if row is None:
        raise EventNotFound(f"no stored event has number {number}")
    return StoredEvent(row[0], row[1], row[2], dict(row[3]), row[4])


async def detail(conn: psycopg.AsyncConnection[Any], number: int) -> dict[str, Any]:
    """The event with every delivery made of it (per Trigger, dead letters and replays
    included) and every attempt of each, oldest first; EventNotFound if there is none."""
    event = await (
        await conn.execute(
            "SELECT id, namespace, broker, attributes, data, accepted_at"
            " FROM knfn_events WHERE id = %s",
            (number,),
        )
    ).fetchone()
    if event is None:
        raise EventNotFound(f"no stored event has number {number}")
    deliveries = await (
        await conn.execute(
            "SELECT id, trigger, kind, destination, replay, state, attempts, last_status,"
            " last_error, latency_ms, finished_at, next_attempt_at, extensions"
            " FROM knfn_deliveries WHERE event_id = %s ORDER BY id",
            (number,),
        )
    ).fetchall()
    attempts = await (
        await conn.execute(
            "SELECT delivery_id, attempt, outcome, status, error, started_at, latency_ms"
            " FROM knfn_attempts WHERE delivery_id = ANY(%s) ORDER BY id",
            ([d[0] for d in deliveries],),
        )
    ).fetchall()
    return assemble(event, deliveries, attempts)


async def replay(
    conn: psycopg.AsyncConnection[Any],
    number: int,
    deliveries: Sequence[NewDelivery],
) -> int:
    """Add these deliveries to the stored event as its next replay (numbered from 1) and
    wake the dispatchers; returns the replay's number."""
    async with conn.transaction(), conn.cursor() as cur:
        # The event's row lock orders concurrent replays of one event.
        await cur.execute("SELECT namespace FROM knfn_events WHERE id = %s FOR UPDATE", (number,))
        found = await cur.fetchone()
        if found is None:
            raise EventNotFound(f"no stored event has number {number}")
        await cur.execute(
            "SELECT coalesce(max(replay), 0) + 1 FROM knfn_deliveries WHERE event_id = %s",
            (number,),
        )
        row = await cur.fetchone()
        replay_number = 1 if row is None else int(row[0])
        await insert_deliveries(
            cur, [(number, str(found[0]), replace(d, replay=replay_number)) for d in deliveries]
        )
        await cur.execute(f"NOTIFY {CHANNEL}")
    return replay_number


async def counts(conn: psycopg.AsyncConnection[Any]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (namespace, trigger): deliveries by state."""
    cur = await conn.execute(
        "SELECT namespace, trigger, state, count(*) FROM knfn_deliveries"
        " GROUP BY namespace, trigger, state"
    )
    out: dict[tuple[str, str], dict[str, int]] = {}
    for ns, trigger, state, n in await cur.fetchall():
        out.setdefault((ns, trigger), {})[state] = int(n)
    return out


DATA_SHOWN = 64 * 1024  # bytes of an event's data the inspector shows


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _row(keys: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return {k: _iso(v) for k, v in zip(keys, row, strict=True)}


def show_data(data: bytes | None) -> dict[str, Any]:
    """An event's data for JSON: text when it is UTF-8, else base64; cut at DATA_SHOWN bytes."""
    if data is None:
        return {"data": None, "data_encoding": None, "data_bytes": 0, "data_truncated": False}
    shown = data[:DATA_SHOWN]
    try:
        text, encoding = shown.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(shown).decode(), "base64"
    return {
        "data": text,
        "data_encoding": encoding,
        "data_bytes": len(data),
        "data_truncated": len(data) > DATA_SHOWN,
    }


DELIVERY_KEYS = (
    "delivery", "trigger", "kind", "destination", "replay", "state", "attempts", "last_status",
    "last_error", "latency_ms", "finished_at", "next_attempt_at", "extensions",
)  # fmt: skip
ATTEMPT_KEYS = ("attempt", "outcome", "status", "error", "started_at", "latency_ms")


def assemble(
    event: Sequence[Any], deliveries: Sequence[Sequence[Any]], attempts: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """The inspector's view of one event from its rows: (id, namespace, broker, attributes,
    data, accepted_at), deliveries as DELIVERY_KEYS, attempts as (delivery_id, *ATTEMPT_KEYS).
    A delivery's ``attempt_log`` lists its attempts; ``attempts`` stays the count, as in
    /events. A delivery still pending has claimed attempts the log may not show yet."""
    number, namespace, broker, attributes, data, accepted_at = event
    log: dict[int, list[dict[str, Any]]] = {}
    for row in attempts:
        log.setdefault(row[0], []).append(_row(ATTEMPT_KEYS, row[1:]))
    out = []
    for row in deliveries:
        item = _row(DELIVERY_KEYS, row)
        item["attempt_log"] = log.get(row[0], [])
        out.append(item)
    attrs = dict(attributes)
    return {
        "event": number,
        "event_id": attrs.get("id"),
        "type": attrs.get("type"),
        "source": attrs.get("source"),
        "namespace": namespace,
        "broker": broker,
        "accepted_at": _iso(accepted_at),
        "attributes": attrs,
        **show_data(data),
        "deliveries": out,
        "dead_lettered": any(d["kind"] == "dead-letter" for d in out),
    }
