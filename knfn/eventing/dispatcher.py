"""The broker's dispatchers: claim due deliveries, attempt them, retry, dead-letter.

As the broker filter and pkg/kncloudevents: the TTL is removed before delivery; a 2xx with an
empty body is an acknowledgement, a 2xx with a CloudEvent is a reply that re-enters the broker
(with the TTL lowered by one), a 2xx with any other body is a failed delivery (502); failures
are retried by the trigger's delivery policy and finally dead-lettered with
``knativeerrordest``, ``knativeerrorcode`` and ``knativeerrordata``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from knfn.eventing import cloudevent, delivery
from knfn.eventing.broker import ARRIVAL, DEFAULT_TTL, NOT_A_CLOUDEVENT, TTL, fan_out, now_rfc3339
from knfn.eventing.cloudevent import Event
from knfn.eventing.config import EventingConfig
from knfn.eventing.sending import DEFAULT_ATTEMPT_TIMEOUT, Sender
from knfn.eventing.store import Accept, Claimed, EventStore, NewDelivery, Outcome


class Dispatcher:
    """Claims due deliveries in batches and attempts them concurrently."""

    def __init__(
        self,
        url: str,
        store: EventStore,
        config: Callable[[], EventingConfig],
        send: Sender,
        *,
        batch: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._store = store
        self._config = config
        self._send = send
        self._batch = batch
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._loop(stop)
            except (psycopg.Error, OSError):
                # The database went away: wait and reconnect; claimed work is leased, not lost.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _loop(self, stop: asyncio.Event) -> None:
        async with (
            await psycopg.AsyncConnection.connect(self._url, autocommit=True) as work,
            await psycopg.AsyncConnection.connect(self._url, autocommit=True) as listen,
        ):
            await listen.execute(f"LISTEN {'knfn_deliveries'}")
            while not stop.is_set():
                lease = timedelta(seconds=self._lease_seconds())
                claimed = await self._store.claim(work, self._batch, lease)
                if claimed:
                    outcomes = await asyncio.gather(*(self.attempt(c) for c in claimed))
                    await self._store.record(work, outcomes)
                    continue
                due = await self._store.next_due(work)
                wait = 1.0 if due is None else min(1.0, due)
                if wait > 0:
                    async for _ in listen.notifies(timeout=wait, stop_after=1):
                        pass

    def _lease_seconds(self) -> float:
        longest = max(
            (t.delivery.timeout or DEFAULT_ATTEMPT_TIMEOUT for t in self._config().triggers),
            default=DEFAULT_ATTEMPT_TIMEOUT,
        )
        return longest + 5.0

    async def attempt(self, claimed: Claimed) -> Outcome:
        """Deliver once; decide delivered, retry later, dead-letter or give up."""
        config = self._config()
        trigger = config.trigger(claimed.namespace, claimed.trigger)
        if trigger is None:
            return Outcome(claimed.id, "failed", None, f"trigger {claimed.trigger} is gone")
        attributes = dict(claimed.attributes)
        ttl = int(attributes.pop(TTL, DEFAULT_TTL))
        attributes.update(claimed.extensions)
        headers, body = cloudevent.to_binary(Event(attributes, claimed.data))
        spec = trigger.delivery
        status, reply_headers, reply_body, error = await self._send(
            claimed.destination, headers, body, spec.timeout or DEFAULT_ATTEMPT_TIMEOUT
        )
        if status is not None and 200 <= status < 300:
            kind, reply = cloudevent.classify_reply(reply_headers, reply_body)
            if kind != "invalid":
                replies = []
                if reply is not None and claimed.kind == "subscriber" and ttl - 1 > 0:
                    reply = reply.replace(**{TTL: str(ttl - 1), ARRIVAL: now_rfc3339()})
                    deliveries = fan_out(config, claimed.namespace, claimed.broker, reply)
                    replies.append(
                        Accept(claimed.namespace, claimed.broker, dict(reply.attributes),
                               reply.data, deliveries)
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
