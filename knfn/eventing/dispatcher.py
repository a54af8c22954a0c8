"""The broker's dispatchers: claim due deliveries, attempt them, retry, dead-letter.

As the broker filter and pkg/kncloudevents: the TTL is removed before delivery; a 2xx with an
empty body is an acknowledgement, a 2xx with a CloudEvent is a reply that re-enters the broker
(with the TTL lowered by one), a 2xx with any other body is a failed delivery (502); failures
are retried by the trigger's delivery policy and finally dead-lettered with
``knativeerrordest``, ``knativeerrorcode`` and ``knativeerrordata``.

What a request carries (``sending.py``): the event's pass-through headers, ``Kn-Namespace``,
and ``Prefer: reply`` to the subscriber. The event is in binary mode unless the Trigger's own
``delivery.format`` is ``json`` (``pkg/broker/filter/filter_handler.go``
handleDispatchToSubscriberRequest: only the Trigger's format is read, never the Broker's);
a dead letter is in binary mode, as the channel's dispatcher sends it.

A row with a ``flow_hop`` is a hop of a Sequence or Parallel: ``subscription.py`` attempts it
under its subscription's delivery and turns a reply into the flow's next hop.

Isolation: every attempt runs on its own task (:class:`InFlight`), bounded overall and per
destination, and its outcome is written as soon as it is known (writes of attempts that end
together share a transaction). A destination at its bound is left out of the next claims, so a
subscriber that hangs holds only its own slots and never delays another Trigger's deliveries.

Every attempt is written with its outcome (``knfn_attempts``: number, start, duration, status,
error), in the same transaction and statement batch, for the event inspector.

Stopping: claims stop first; attempts in flight may finish until the caller cuts them short.
An attempt cut short, and any failure seen once stopping began (the gateway or a flow may be
going away under it), is *released*: back to pending, due now, its attempt not counted. So a
shutdown never uses up a retry or dead-letters an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from knfn.eventing import cloudevent, delivery, subscription
from knfn.eventing.broker import ARRIVAL, DEFAULT_TTL, NOT_A_CLOUDEVENT, TTL, fan_out, now_rfc3339
from knfn.eventing.cloudevent import Event
from knfn.eventing.config import EventingConfig
from knfn.eventing.sending import (
    DEFAULT_ATTEMPT_TIMEOUT,
    Sender,
    delivery_headers,
    reply_headers,
)
from knfn.eventing.store import CHANNEL, Accept, Claimed, EventStore, NewDelivery, Outcome

# A claim holds its rows this long; the lease of every held delivery is renewed well before it
# runs out, so an attempt without a timeout is never claimed twice while it runs.
LEASE_SECONDS = 60.0
# How long the last outcomes and releases may take to be written once stopping.
FLUSH_SECONDS = 5.0
# Database gone: wait this long before connecting again (claimed work stays leased).
RECONNECT_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """How many attempts run at once: in all, and to one destination (a subscriber URL)."""

    total: int = 256
    per_destination: int = 32
    batch: int = 64


DEFAULT_LIMITS = Limits()


def new_pool(url: str) -> AsyncConnectionPool[Any]:
    """A process's pool for the event store: autocommit connections (a claim is one statement;
    outcomes open their own transaction), reconnected by the pool when the database comes back.
    Opened by ``async with``."""
    return AsyncConnectionPool(
        url,
        min_size=2,
        max_size=4,
        kwargs={"autocommit": True},
        timeout=RECONNECT_SECONDS * 5,
        open=False,
        name="knfn-dispatch",
    )


class InFlight:
    """Attempts in flight, each on its own task; results reported as each one ends.

    ``attempt`` makes one attempt; ``done`` is told its outcome at once. A claimed delivery
    whose destination is at its bound waits here (still leased) for a slot of that destination
    only. :meth:`saturated` names the destinations that should not be claimed for now.
    """

    def __init__(
        self,
        attempt: Callable[[Claimed], Awaitable[Outcome]],
        done: Callable[[Claimed, Outcome], None],
        limits: Limits,
    ) -> None:
        self._attempt = attempt
        self._done = done
        self.limits = limits
        self.held: dict[int, Claimed] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._per_destination: Counter[str] = Counter()
        self._running: Counter[str] = Counter()
        self._waiting: dict[str, deque[Claimed]] = {}
        self.changed = asyncio.Event()

    def room(self) -> int:
        """How many more deliveries may be claimed now."""
        return max(0, self.limits.total - len(self.held))

    def saturated(self) -> list[str]:
        """Destinations holding their bound: left out of claims until one of theirs ends."""
        bound = self.limits.per_destination
        return sorted(d for d, n in self._per_destination.items() if n >= bound)

    def add(self, claimed: Claimed) -> None:
        self.held[claimed.id] = claimed
        self._per_destination[claimed.destination] += 1
        if self._running[claimed.destination] < self.limits.per_destination:
            self._start(claimed)
        else:
            self._waiting.setdefault(claimed.destination, deque()).append(claimed)

    def _start(self, claimed: Claimed) -> None:
        self._running[claimed.destination] += 1
        self._tasks[claimed.id] = asyncio.create_task(self._run(claimed))

    async def _run(self, claimed: Claimed) -> None:
        outcome = await self._attempt(claimed)
        self._end(claimed)
        self._done(claimed, outcome)

    def _end(self, claimed: Claimed) -> None:
        destination = claimed.destination
        del self.held[claimed.id]
        self._tasks.pop(claimed.id, None)
        self._running[destination] -= 1
        self._per_destination[destination] -= 1
        if self._per_destination[destination] <= 0:
            del self._per_destination[destination]
            del self._running[destination]
        waiting = self._waiting.get(destination)
        if waiting:
            self._start(waiting.popleft())
            if not waiting:
                del self._waiting[destination]
        self.changed.set()

    async def drain(self, cut: asyncio.Event) -> list[Claimed]:
        """Let the attempts in flight end until ``cut``; cancel the rest and return them."""
        while self.held and not cut.is_set():
            self.changed.clear()
            waits = [asyncio.ensure_future(self.changed.wait()), asyncio.ensure_future(cut.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = list(self.held.values())
        self.held.clear()
        self._tasks.clear()
        self._waiting.clear()
        self._per_destination.clear()
        self._running.clear()
        return left


class Dispatcher:
    """Claims due deliveries and attempts each on its own task, within :class:`Limits`.

    Its connections come from ``pool`` (the process's one pool for the event store; without
    one, :meth:`run` opens its own from ``url``), but for the LISTEN connection, which is its
    own for as long as it listens.
    """

    def __init__(
        self,
        url: str,
        store: EventStore,
        config: Callable[[], EventingConfig],
        send: Sender,
        *,
        limits: Limits = DEFAULT_LIMITS,
        lease: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
        pool: AsyncConnectionPool[Any] | None = None,
    ) -> None:
        self._url = url
        self._store = store
        self._config = config
        self._send = send
        self._lease = timedelta(seconds=lease)
        self._clock = clock
        self._pool = pool
        self._inflight = InFlight(self._attempt_safely, self._ended, limits)
        self._outcomes: list[Outcome] = []
        self._releases: list[int] = []
        self._writing = 0  # outcomes and releases taken by the recorder, not yet written
        self._ordered_ended = False  # the next write tells every dispatcher (see record)
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.released = 0
        self.delivered = 0

    # -- the loops -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, cut: asyncio.Event) -> None:
        """Claim and attempt until ``stop``; then let attempts end until ``cut``, release the
        rest, and write everything still unwritten."""
        if self._pool is None:
            async with new_pool(self._url) as pool:
                self._pool = pool
                try:
                    await self._run(stop, cut, pool)
                finally:
                    self._pool = None
        else:
            await self._run(stop, cut, self._pool)

    async def _run(
        self, stop: asyncio.Event, cut: asyncio.Event, pool: AsyncConnectionPool[Any]
    ) -> None:
        self._stopping = stop
        recorder = asyncio.create_task(self._record_loop(pool))
        try:
            while not stop.is_set():
                try:
                    await self._claim_loop(stop, pool)
                except (psycopg.Error, OSError):
                    # The database went away: claimed work is leased, not lost; connect again.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RECONNECT_SECONDS)
            # 1. No more claims; failures from here on are released, not counted (_ended).
            # 2. Attempts in flight end by themselves, or are cut short and released.
            cut_short = await self._inflight.drain(cut)
            self._releases.extend(c.id for c in cut_short)
            self._dirty.set()
        finally:
            # 3. The last outcomes and releases are written (bounded: the database may be gone;
            # then the leases lapse and the next start makes the deliveries due again). Flushed
            # means written, not merely taken by the recorder: a write in progress is awaited,
            # never cancelled half-way (its count would be lost).
            self._dirty.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed(), FLUSH_SECONDS)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    async def _flushed(self) -> None:
        while self._outcomes or self._releases or self._writing:
            self._dirty.set()
            await asyncio.sleep(0.01)

    async def _claim_loop(self, stop: asyncio.Event, pool: AsyncConnectionPool[Any]) -> None:
        async with (
            pool.connection() as work,
            await psycopg.AsyncConnection.connect(self._url, autocommit=True) as listen,
        ):
            await listen.execute(f"LISTEN {CHANNEL}")
            listener = asyncio.create_task(self._listen(listen))
            try:
                while not stop.is_set():
                    if listener.done():
                        listener.result()  # the connection failed: reconnect
                    await self._claim_once(work, stop)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await listener

    async def _listen(self, listen: psycopg.AsyncConnection[Any]) -> None:
        async for _ in listen.notifies():
            self._wake.set()

    async def _claim_once(self, work: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        inflight = self._inflight
        self._wake.clear()
        inflight.changed.clear()
        room = min(inflight.limits.batch, inflight.room())
        skip = inflight.saturated()
        claimed: list[Claimed] = []
        if room > 0:
            claimed = await self._store.claim(work, room, self._lease, skip=skip)
            for c in claimed:
                inflight.add(c)
            if len(claimed) == room:
                return
            due = await self._store.next_due(work, skip=skip)
            wait = 1.0 if due is None else min(1.0, due)
        else:
            wait = 1.0
        if wait <= 0:
            if claimed:
                return
            # Due but not claimable: held by another dispatcher, or an ordered delivery behind
            # an earlier one of its key. Its end is notified (record), so wait for that.
            wait = 1.0
        # Sleep until new work is notified, a slot frees (when slots are what held us back),
        # the next retry is due, or stop.
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        if room == 0 or skip:
            waits.append(asyncio.ensure_future(inflight.changed.wait()))
        try:
            await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _record_loop(self, pool: AsyncConnectionPool[Any]) -> None:
        """Write outcomes and releases as they come (each round's in one batch), renewing the
        leases of held deliveries."""
        renew_every = self._lease.total_seconds() / 3
        last_renewal = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), renew_every)
            self._dirty.clear()
            outcomes, self._outcomes = self._outcomes, []
            releases, self._releases = self._releases, []
            wake, self._ordered_ended = self._ordered_ended, False
            self._writing = len(outcomes) + len(releases)
            try:
                async with pool.connection() as conn:
                    if outcomes:
                        await self._store.record(conn, outcomes, wake=wake)
                    if releases:
                        await self._store.release(conn, releases)
                        self.released += len(releases)
                    if time.monotonic() - last_renewal >= renew_every:
                        await self._store.renew(conn, list(self._inflight.held), self._lease)
                        last_renewal = time.monotonic()
            except (psycopg.Error, OSError):
                # Kept for the next round; the leases keep the rows from being claimed.
                self._outcomes[:0] = outcomes
                self._releases[:0] = releases
                self._ordered_ended |= wake
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                self._writing = 0

    def _ended(self, claimed: Claimed, outcome: Outcome) -> None:
        if self._stopping.is_set() and outcome.state != "delivered":
            self._releases.append(claimed.id)
        else:
            self._outcomes.append(outcome)
            self.delivered += outcome.state == "delivered"
            self._ordered_ended |= claimed.order_key is not None and outcome.state != "pending"
        self._dirty.set()

    async def _attempt_safely(self, claimed: Claimed) -> Outcome:
        """One attempt, stamped with its number, start and duration for knfn_attempts."""
        started, began = self._clock(), time.monotonic()
        try:
            outcome = await self.attempt(claimed)
        except Exception as exc:  # a defect must not lose the delivery: retry it later
            retry_at = datetime.fromtimestamp(self._clock() + 10.0, UTC)
            error = f"{exc.__class__.__name__}: {exc}"
            outcome = Outcome(claimed.id, "pending", None, error, retry_at=retry_at)
        return replace(
            outcome,
            attempt=claimed.attempts,
            started_at=datetime.fromtimestamp(started, UTC),
            took_ms=(time.monotonic() - began) * 1000,
        )

    # -- one attempt ---------------------------------------------------------------------------
    async def attempt(self, claimed: Claimed) -> Outcome:
        """Deliver once; decide delivered, retry later, dead-letter or give up."""
        config = self._config()
        if claimed.flow_hop is not None:  # a Sequence's or Parallel's hop: its subscription's
            return await subscription.attempt(config.flows, claimed, self._send, self._clock)
        trigger = config.trigger(claimed.namespace, claimed.trigger)
        if trigger is None:
            return Outcome(claimed.id, "failed", None, f"trigger {claimed.trigger} is gone")
        attributes = dict(claimed.attributes)
        ttl = int(attributes.pop(TTL, DEFAULT_TTL))
        attributes.update(claimed.extensions)
        to_subscriber = claimed.kind == "subscriber"
        structured = to_subscriber and trigger.delivery.format == "json"
        encode = cloudevent.to_structured if structured else cloudevent.to_binary
        headers, body = encode(Event(attributes, claimed.data))
        headers.update(
            delivery_headers(claimed.headers, claimed.namespace, prefer_reply=to_subscriber)
        )
        spec = trigger.delivery
        status, answer_headers, reply_body, error = await self._send(
            claimed.destination, headers, body, spec.timeout or DEFAULT_ATTEMPT_TIMEOUT
        )
        if status is not None and 200 <= status < 300:
            kind, reply = cloudevent.classify_reply(answer_headers, reply_body)
            if kind != "invalid":
                replies = []
                if reply is not None and claimed.kind == "subscriber" and ttl - 1 > 0:
                    reply = reply.replace(**{TTL: str(ttl - 1), ARRIVAL: now_rfc3339()})
                    deliveries = fan_out(config, claimed.namespace, claimed.broker, reply)
                    replies.append(
                        Accept(claimed.namespace, claimed.broker, dict(reply.attributes),
                               reply.data, deliveries,
                               reply_headers(answer_headers.items(), claimed.headers))
                    )  # fmt: skip
                return Outcome(claimed.id, "delivered", status, None, replies=replies)
            status, error = 502, NOT_A_CLOUDEVENT
        return self._failed(
            claimed, trigger.delivery, trigger.dead_letter_url, status, error, reply_body
        )

    def _failed(
        self,
        claimed: Claimed,
        spec: delivery.DeliverySpec,
        dead_letter_url: str | None,
        status: int | None,
        error: str | None,
        body: bytes,
    ) -> Outcome:
        retries_done = claimed.attempts - 1
        if delivery.is_retryable(status) and retries_done < spec.retry:
            wait = delivery.backoff_seconds(spec, retries_done + 1)
            retry_at = datetime.fromtimestamp(self._clock() + wait, UTC)
            return Outcome(claimed.id, "pending", status, error, retry_at=retry_at)
        if claimed.kind == "subscriber" and dead_letter_url:
            extensions = delivery.dead_letter_extensions(
                claimed.destination, status, body, error=error
            )
            dead = NewDelivery(claimed.trigger, dead_letter_url, "dead-letter", extensions)
            return Outcome(claimed.id, "dead", status, error, followups=[dead])
        return Outcome(claimed.id, "failed", status, error)
