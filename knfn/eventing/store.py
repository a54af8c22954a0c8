"""The broker's durable queue in knfn's database: nothing is answered 202 before it is here.

An accepted event and one delivery row per matching trigger are written in one transaction;
concurrent accepts are grouped into one commit (group commit), which is what lets one Postgres
connection take thousands of events a second. Dispatchers claim due deliveries with
``FOR UPDATE SKIP LOCKED`` and a lease (``next_attempt_at`` moved past the attempt's timeout), so
a crashed knfn leaves them claimable again: delivery is at least once. Commits that add work send
``NOTIFY knfn_deliveries`` so idle dispatchers wake at once. What the admin API and the event
inspector read back, and replays, are in knfn/eventing/history.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from knfn.errors import KnfnError

CHANNEL = "knfn_deliveries"
# A pending delivery ``d`` that may be attempted now as far as order goes: unordered, or no
# earlier delivery of its Trigger and key is still pending (in flight or waiting for a retry).
UNBLOCKED = (
    "(d.order_key IS NULL OR NOT EXISTS ("
    "SELECT 1 FROM knfn_deliveries p WHERE p.state = 'pending' AND p.order_key = d.order_key"
    " AND p.trigger = d.trigger AND p.namespace = d.namespace AND p.id < d.id))"
)
GROUP_LIMIT = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS knfn_events (
    id          bigserial PRIMARY KEY,
    namespace   text NOT NULL,
    broker      text NOT NULL,
    attributes  jsonb NOT NULL,
    data        bytea,
    accepted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS knfn_deliveries (
    id              bigserial PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES knfn_events (id),
    namespace       text NOT NULL,
    trigger         text NOT NULL,
    kind            text NOT NULL DEFAULT 'subscriber',
    destination     text NOT NULL,
    extensions      jsonb NOT NULL DEFAULT '{}',
    state           text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    leased          boolean NOT NULL DEFAULT false,
    last_status     integer,
    last_error      text,
    finished_at     timestamptz,
    latency_ms      double precision
);
CREATE INDEX IF NOT EXISTS knfn_deliveries_due
    ON knfn_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS knfn_deliveries_event ON knfn_deliveries (event_id);
-- Which replay of the event made the delivery: 0 is the ingress's fan-out (see replay.py).
ALTER TABLE knfn_deliveries ADD COLUMN IF NOT EXISTS replay integer NOT NULL DEFAULT 0;
-- Every attempt of a delivery, written with its outcome (the event inspector reads them).
CREATE TABLE IF NOT EXISTS knfn_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES knfn_deliveries (id),
    attempt     integer NOT NULL,
    outcome     text NOT NULL,
    status      integer,
    error       text,
    started_at  timestamptz NOT NULL,
    latency_ms  double precision
);
CREATE INDEX IF NOT EXISTS knfn_attempts_delivery ON knfn_attempts (delivery_id);
-- The headers of the request that brought the event which travel on with it (X-Request-Id,
-- Knative-*, the trace context: sending.pass_through). Added later: an event stored before
-- has none, as if it had come without them.
ALTER TABLE knfn_events ADD COLUMN IF NOT EXISTS headers jsonb NOT NULL DEFAULT '{}';
-- An ordered Trigger's deliveries carry their event's partitionkey: one of a key is attempted
-- only once every earlier one of that key and Trigger has ended (see claim). NULL: unordered.
ALTER TABLE knfn_deliveries ADD COLUMN IF NOT EXISTS order_key text;
CREATE INDEX IF NOT EXISTS knfn_deliveries_ordered
    ON knfn_deliveries (namespace, trigger, order_key, id)
    WHERE state = 'pending' AND order_key IS NOT NULL;
-- A hop of a Sequence or Parallel ('Sequence/<name>/steps[1]', see subscription.py): its delivery
-- spec and what becomes of its reply come from the flow. NULL: a Trigger's delivery.
ALTER TABLE knfn_deliveries ADD COLUMN IF NOT EXISTS flow_hop text;
"""


class StoreUnavailable(KnfnError):
    """The database could not take the event: the ingress answers 503, never 202."""


class EventRejected(KnfnError):
    """The database refused this one event for what it holds (not for being down): 400."""


@dataclass(frozen=True)
class NewDelivery:
    trigger: str
    destination: str
    kind: str = "subscriber"
    extensions: dict[str, str] = field(default_factory=dict)
    replay: int = 0  # which replay of the event made it (0: the ingress's fan-out)
    order_key: str | None = None  # an ordered Trigger's partitionkey (None: unordered)
    flow_hop: str | None = None  # a flow's hop (subscription.py); None: a Trigger's delivery


@dataclass(frozen=True)
class Accept:
    """One event to store, with the deliveries it fans out to."""

    namespace: str
    broker: str
    attributes: dict[str, str]
    data: bytes | None
    deliveries: Sequence[NewDelivery]
    headers: Mapping[str, str] = field(default_factory=dict)  # sending.pass_through


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: int
    namespace: str
    trigger: str
    kind: str
    destination: str
    extensions: dict[str, str]
    attempts: int
    attributes: dict[str, str]
    data: bytes | None
    broker: str
    accepted_at: datetime
    headers: dict[str, str] = field(default_factory=dict)  # the event's pass-through headers
    order_key: str | None = None  # an ordered Trigger's partitionkey (None: unordered)
    flow_hop: str | None = None  # a flow's hop (subscription.py); None: a Trigger's delivery


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt: delivered, retry at a time, or finished as dead/failed."""

    delivery_id: int
    state: str  # delivered | pending | dead | failed
    status: int | None
    error: str | None
    retry_at: datetime | None = None
    followups: Sequence[NewDelivery] = ()  # e.g. the dead-letter delivery
    replies: Sequence[Accept] = ()  # a reply event re-entering a broker
    # The attempt, for knfn_attempts: its number, when it began and how long it took (ms).
    attempt: int = 0
    started_at: datetime | None = None
    took_ms: float | None = None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _connect_error(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"the broker's database is unavailable: {exc}")


# The events and their deliveries in one statement: ids drawn first (in order), then both
# inserts, the NOTIFY when there are deliveries, and the ids as the result. In autocommit it is
# one transaction and one round trip, however many events the group holds. Parameters go in
# binary (%b): text arrays would be quoted element by element, a regex per value.
INSERT_EVENTS = (
    "WITH ids AS MATERIALIZED (SELECT array_agg(id) AS a FROM"
    "  (SELECT nextval('knfn_events_id_seq') AS id FROM generate_series(1, %(count)s)) s),"
    " events AS (INSERT INTO knfn_events (id, namespace, broker, attributes, data, headers)"
    "  SELECT (SELECT a FROM ids)[e.n], e.namespace, e.broker, e.attributes, e.data, e.headers"
    "  FROM unnest(%(namespace)b::text[], %(broker)b::text[], %(attributes)b::jsonb[],"
    "   %(data)b::bytea[], %(headers)b::jsonb[]) WITH ORDINALITY"
    "   AS e(namespace, broker, attributes, data, headers, n)),"
    " deliveries AS (INSERT INTO knfn_deliveries"
    "  (event_id, namespace, trigger, kind, destination, extensions, replay, order_key, flow_hop)"
    "  SELECT (SELECT a FROM ids)[d.n], d.namespace, d.trigger, d.kind, d.destination,"
    "   d.extensions, d.replay, d.order_key, d.flow_hop"
    "  FROM unnest(%(d_event)b::int8[], %(d_namespace)b::text[], %(d_trigger)b::text[],"
    "   %(d_kind)b::text[], %(d_destination)b::text[], %(d_extensions)b::jsonb[],"
    "   %(d_replay)b::int4[], %(d_order_key)b::text[], %(d_flow_hop)b::text[])"
    "   AS d(n, namespace, trigger, kind, destination, extensions, replay, order_key, flow_hop)),"
    f" wake AS (SELECT pg_notify('{CHANNEL}', '') WHERE %(notify)s)"
    " SELECT unnest(ids.a) FROM ids LEFT JOIN wake ON true"
)


def _insert_params(accepts: Sequence[Accept]) -> dict[str, Any]:
    """The parameters of INSERT_EVENTS for these accepts (deliveries keep their order)."""
    rows = [(n, a, d) for n, a in enumerate(accepts, 1) for d in a.deliveries]
    return {
        "count": len(accepts),
        "namespace": [a.namespace for a in accepts],
        "broker": [a.broker for a in accepts],
        "attributes": [Jsonb(a.attributes) for a in accepts],
        "data": [a.data for a in accepts],
        "headers": [Jsonb(dict(a.headers)) for a in accepts],
        "d_event": [n for n, _, _ in rows],
        "d_namespace": [a.namespace for _, a, _ in rows],
        "d_trigger": [d.trigger for _, _, d in rows],
        "d_kind": [d.kind for _, _, d in rows],
        "d_destination": [d.destination for _, _, d in rows],
        "d_extensions": [Jsonb(d.extensions) for _, _, d in rows],
        "d_replay": [d.replay for _, _, d in rows],
        "d_order_key": [d.order_key for _, _, d in rows],
        "d_flow_hop": [d.flow_hop for _, _, d in rows],
        "notify": bool(rows),
    }


async def _insert(cur: psycopg.AsyncCursor[Any], accepts: Sequence[Accept]) -> list[int]:
    """Store the events with their deliveries (NOTIFY included when there are any); their
    ids, in order."""
    await cur.execute(INSERT_EVENTS, _insert_params(accepts))
    return [row[0] for row in await cur.fetchall()]


async def insert_deliveries(
    cur: psycopg.AsyncCursor[Any], rows: Sequence[tuple[int, str, NewDelivery]]
) -> None:
    if not rows:
        return
    await cur.execute(
        "INSERT INTO knfn_deliveries"
        " (event_id, namespace, trigger, kind, destination, extensions, replay, order_key,"
        " flow_hop)"
        " SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[],"
        " %b::jsonb[], %b::int[], %b::text[], %b::text[])",
        (
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2].trigger for r in rows],
            [r[2].kind for r in rows],
            [r[2].destination for r in rows],
            [Jsonb(r[2].extensions) for r in rows],
            [r[2].replay for r in rows],
            [r[2].order_key for r in rows],
            [r[2].flow_hop for r in rows],
        ),
    )


# The outcomes of a round of attempts: each delivery's new state and its attempt's row, and the
# NOTIFY when asked (something is pending again, or an ordered delivery ended).
RECORD = (
    "WITH o AS (SELECT * FROM unnest(%(id)b::int8[], %(state)b::text[], %(status)b::int4[],"
    "  %(error)b::text[], %(retry_at)b::timestamptz[], %(attempt)b::int4[],"
    "  %(started_at)b::timestamptz[], %(took_ms)b::float8[])"
    "  AS o(id, state, status, error, retry_at, attempt, started_at, took_ms)),"
    " done AS (UPDATE knfn_deliveries d SET state = o.state, last_status = o.status,"
    "  leased = false, last_error = o.error,"
    "  next_attempt_at = coalesce(o.retry_at, d.next_attempt_at),"
    "  finished_at = CASE WHEN o.state = 'pending' THEN NULL ELSE %(now)s END,"
    "  latency_ms = CASE WHEN o.state = 'delivered' THEN"
    "   extract(epoch FROM %(now)s - e.accepted_at) * 1000 END"
    "  FROM o, knfn_events e WHERE d.id = o.id AND e.id = d.event_id),"
    f" wake AS (SELECT pg_notify('{CHANNEL}', '') WHERE %(notify)s)"
    " INSERT INTO knfn_attempts"
    " (delivery_id, attempt, outcome, status, error, started_at, latency_ms)"
    " SELECT o.id, o.attempt, o.state, o.status, o.error, o.started_at, o.took_ms"
    " FROM o LEFT JOIN wake ON true"
)


def _record_params(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": [o.delivery_id for o in outcomes],
        "state": [o.state for o in outcomes],
        "status": [o.status for o in outcomes],
        "error": [o.error for o in outcomes],
        "retry_at": [o.retry_at for o in outcomes],
        "attempt": [o.attempt for o in outcomes],
        "started_at": [o.started_at or now for o in outcomes],
        "took_ms": [o.took_ms for o in outcomes],
        "now": now,
    }


class EventStore:
    """Group-committing accepts, lease-based claims, and outcome recording."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._pending: list[tuple[Accept, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create the schema and start the group committer."""
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(SCHEMA)
            # One knfn runs against this database: leases of a previous run are void. Their
            # attempts were cut short by a crash (a stop releases them: release), so, as there,
            # the attempt the claim counted is taken back: a crash never uses up a retry. An
            # attempt that did reach its subscriber is made once more (at least once).
            await conn.execute(
                "UPDATE knfn_deliveries SET next_attempt_at = clock_timestamp(), leased = false,"
                " attempts = greatest(attempts - 1, 0) WHERE state = 'pending' AND leased"
            )
        self._committer = asyncio.create_task(self._commit_loop())

    async def close(self) -> None:
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        if self._writer is not None:
            await self._writer.close()
        for _, future in self._pending:
            if not future.done():
                future.set_exception(StoreUnavailable("knfn is shutting down"))

    # -- accept --------------------------------------------------------------------------------
    async def accept(self, item: Accept) -> int:
        """Store the event and its deliveries; returns once committed (the 202 may then go)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await future

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:GROUP_LIMIT], self._pending[GROUP_LIMIT:]
                await self._commit_group(batch)

    async def _commit_group(self, batch: Sequence[tuple[Accept, asyncio.Future[int]]]) -> None:
        """Commit the group at once; if the data was refused, each item on its own.

        A connection failure fails the group (503 for all: nothing was stored). A refusal of
        the data (a value Postgres cannot hold that got past the ingress's checks) must not
        fail the valid items committed with it, so they are retried one by one and only the
        refused item gets EventRejected (400).
        """
        try:
            ids = await self._commit([item for item, _ in batch])
        except Exception as exc:
            if self._lost_connection(exc) or len(batch) == 1:
                self._fail(batch, exc)
                return
        else:
            for (_, future), event_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(event_id)
            return
        for i, (item, future) in enumerate(batch):
            try:
                (event_id,) = await self._commit([item])
            except Exception as exc:
                if self._lost_connection(exc):
                    self._fail(batch[i:], exc)
                    return
                self._fail([(item, future)], exc)
            else:
                if not future.done():
                    future.set_result(event_id)

    def _lost_connection(self, exc: Exception) -> bool:
        """Whether the database was out of reach, as opposed to refusing the data sent to it."""
        if isinstance(exc, (OSError, psycopg.InterfaceError)):
            return True
        if not isinstance(exc, psycopg.Error):
            return False  # e.g. a value the driver could not even encode
        writer = self._writer
        if writer is None or writer.closed or writer.broken:
            return True
        # SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown).
        return (exc.sqlstate or "").startswith(("08", "57"))

    def _fail(self, batch: Sequence[tuple[Accept, asyncio.Future[int]]], exc: Exception) -> None:
        error: KnfnError
        if self._lost_connection(exc):
            self._writer = None
            error = _connect_error(exc)
        else:
            error = EventRejected(f"the event cannot be stored: {_first_line(exc)}")
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._writer is None or self._writer.closed:
            self._writer = await psycopg.AsyncConnection.connect(
                self._url, connect_timeout=2, autocommit=True
            )
        return self._writer

    async def _commit(self, accepts: Sequence[Accept]) -> list[int]:
        """One statement, so one transaction in autocommit: stored whole or not at all."""
        conn = await self._connection()
        async with conn.cursor() as cur:
            return await _insert(cur, accepts)

    # -- dispatch ------------------------------------------------------------------------------
    async def claim(
        self,
        conn: psycopg.AsyncConnection[Any],
        limit: int,
        lease: timedelta,
        skip: Sequence[str] = (),
    ) -> list[Claimed]:
        """Up to limit due deliveries, leased until now + lease (then claimable again); none to
        the destinations in skip (the dispatcher's busy ones).

        One statement (atomic in autocommit: no BEGIN/COMMIT round trips), safe across
        processes: ``FOR UPDATE SKIP LOCKED`` gives each row to one claimer. A delivery with an
        order key is due only when no earlier delivery of its Trigger and key is still pending
        (in flight, or waiting for its retry): a row leaves ``pending`` once and never returns,
        so two claimers can never hold two deliveries of one key.
        """
        cur = await conn.execute(
            "WITH due AS ("
            "  SELECT id FROM knfn_deliveries d"
            "  WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()"
            f"  AND NOT destination = ANY(%s) AND {UNBLOCKED}"
            "  ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " UPDATE knfn_deliveries d"
            " SET attempts = d.attempts + 1, leased = true,"
            " next_attempt_at = clock_timestamp() + %s"
            " FROM due, knfn_events e"
            " WHERE d.id = due.id AND e.id = d.event_id"
            " RETURNING d.id, d.event_id, d.namespace, d.trigger, d.kind, d.destination,"
            "  d.extensions, d.attempts, e.attributes, e.data, e.broker, e.accepted_at,"
            "  e.headers, d.order_key, d.flow_hop",
            (list(skip), limit, lease),
        )
        return [Claimed(*row) for row in await cur.fetchall()]

    async def record(
        self,
        conn: psycopg.AsyncConnection[Any],
        outcomes: Sequence[Outcome],
        wake: bool = False,
    ) -> None:
        """Write the outcomes of a batch of attempts, with follow-ups and replies, at once;
        ``wake``: notify the dispatchers even if nothing new is pending (an ordered delivery
        ended, so the next of its key may go)."""
        if not outcomes:
            return
        followups = [(o.delivery_id, f) for o in outcomes for f in o.followups]
        replies = [r for o in outcomes for r in o.replies]
        params = _record_params(outcomes)
        params["notify"] = wake or bool(followups) or any(o.state == "pending" for o in outcomes)
        if not followups and not replies and conn.autocommit:
            # The common round: one statement, so one transaction and one round trip.
            await conn.execute(RECORD, params)
            return
        # Pipelined: the statements of the batch go out together, in one transaction.
        async with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            await cur.execute(RECORD, params)
            if followups:
                await cur.execute(
                    "SELECT id, event_id, namespace, replay FROM knfn_deliveries"
                    " WHERE id = ANY(%s)",
                    ([d for d, _ in followups],),
                )
                origin = {row[0]: row[1:] for row in await cur.fetchall()}
                # A dead letter belongs to the same replay as the delivery it ends.
                await insert_deliveries(
                    cur,
                    [
                        (origin[d][0], origin[d][1], replace(f, replay=origin[d][2]))
                        for d, f in followups
                    ],
                )
            if replies:
                await _insert(cur, replies)  # notifies when the replies fan out

    async def release(self, conn: psycopg.AsyncConnection[Any], ids: Sequence[int]) -> None:
        """Hand claimed deliveries back unattempted (an attempt cut short by a shutdown): due
        now, lease cleared, the attempt the claim counted taken back."""
        if not ids:
            return
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "UPDATE knfn_deliveries SET attempts = greatest(attempts - 1, 0), leased = false,"
                " next_attempt_at = clock_timestamp()"
                " WHERE id = ANY(%s) AND state = 'pending' AND leased",
                (list(ids),),
            )
            await cur.execute(f"NOTIFY {CHANNEL}")

    async def renew(
        self, conn: psycopg.AsyncConnection[Any], ids: Sequence[int], lease: timedelta
    ) -> None:
        """Extend the lease of deliveries still held (an attempt may run longer than a lease)."""
        if ids:
            await conn.execute(
                "UPDATE knfn_deliveries SET next_attempt_at = clock_timestamp() + %s"
                " WHERE id = ANY(%s) AND state = 'pending' AND leased",
                (lease, list(ids)),
            )

    async def next_due(
        self, conn: psycopg.AsyncConnection[Any], skip: Sequence[str] = ()
    ) -> float | None:
        """Seconds until the earliest pending delivery is due, leaving out the destinations in
        skip and ordered deliveries behind an earlier one of their key (None: nothing
        pending)."""
        row = await (
            await conn.execute(
                "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())"
                " FROM knfn_deliveries d WHERE state = 'pending' AND NOT destination = ANY(%s)"
                f" AND {UNBLOCKED}",
                (list(skip),),
            )
        ).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))
