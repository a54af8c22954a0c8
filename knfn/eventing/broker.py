"""The broker: ingress (accept, store, 202) and dispatchers (claim, deliver, retry, dead-letter).

Ingress, as knative/eventing pkg/broker/ingress/ingress_handler.go: POST only (OPTIONS 200,
others 405), ``/<namespace>/<broker>`` or 404, an invalid event 400 with the reason, then
``knativearrivaltime`` and ``knativebrokerttl`` (255 when absent; 0 or less is refused) are set,
and the event is fanned out to the matching triggers and committed before the 202.

Dispatch, as the broker filter and pkg/kncloudevents: the TTL is removed before delivery; a 2xx
with an empty body is an acknowledgement, a 2xx with a CloudEvent is a reply that re-enters the
broker (with the TTL lowered by one), a 2xx with any other body is a failed delivery (502);
failures are retried by the trigger's delivery policy and finally dead-lettered with
``knativeerrordest``, ``knativeerrorcode`` and ``knativeerrordata``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiohttp import web

from knfn.errors import KnfnError
from knfn.eventing import cloudevent, delivery
from knfn.eventing.cloudevent import Event, InvalidEvent
from knfn.eventing.config import EventingConfig
from knfn.eventing.sending import DEFAULT_ATTEMPT_TIMEOUT, Sender
from knfn.eventing.store import (
    Accept,
    Claimed,
    EventRejected,
    EventStore,
    NewDelivery,
    Outcome,
    StoreUnavailable,
)

DEFAULT_TTL = 255
TTL = "knativebrokerttl"
ARRIVAL = "knativearrivaltime"
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
READ_CHUNK = 64 * 1024
NOT_A_CLOUDEVENT = "received a non-empty response that is not a CloudEvent"


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def fan_out(config: EventingConfig, namespace: str, broker: str, event: Event) -> list[NewDelivery]:
    """One delivery per trigger of the broker whose filter matches the event."""
    return [
        NewDelivery(t.name, t.subscriber)
        for t in config.triggers_of(namespace, broker)
        if t.matches(event.attributes)
    ]


class EventTooLarge(KnfnError):
    """The request body is over the ingress's limit: 413."""


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The body, refused (EventTooLarge) past limit bytes without holding more than that.

    The declared Content-Length is checked first; then the body is read in chunks and the read
    stops at the limit (a chunked body declares nothing). What is left unread is discarded by
    aiohttp after the answer.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise EventTooLarge(f"the event is {declared} bytes: at most {limit} are accepted")
    body = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise EventTooLarge(f"the event is over {limit} bytes: at most {limit} are accepted")
    return bytes(body)


class Ingress:
    """The broker-ingress handler, served by the gateway at Knative's broker address.

    ``max_event_bytes`` bounds the request body (413 past it). Knative's own broker ingress
    (pkg/broker/ingress/ingress_handler.go) reads the body whole with no bound of its own;
    knative-gcp's broker ingress caps it at 10 MB (google/knative-gcp#1772) and Kafka-backed
    brokers at about 1 MB (Kafka's message.max.bytes). Here the default is 1 MiB: a dispatcher
    holds a claimed batch of up to 64 events in memory at once.
    """

    def __init__(
        self,
        store: EventStore,
        config: Callable[[], EventingConfig],
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._store = store
        self._config = config
        self._max_event_bytes = max_event_bytes

    async def handle(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": "POST, OPTIONS"})
        if request.method != "POST":
            return _error(405, f"{request.method} is not allowed: the broker accepts POST")
        config = self._config()
        if len(parts) != 2 or (parts[0], parts[1]) not in config.brokers:
            known = sorted(f"/{ns}/{name}" for ns, name in config.brokers)
            return _error(404, f"no broker at {request.path}; brokers: {known}")
        namespace, broker = parts
        try:
            body = await read_bounded(request, self._max_event_bytes)
        except EventTooLarge as exc:
            return _error(413, str(exc))
        try:
            event = cloudevent.from_http(request.headers, body)
            ttl = int(event.attributes.get(TTL, str(DEFAULT_TTL)), 10)
        except InvalidEvent as exc:
            return _error(400, str(exc))
        except ValueError:
            return _error(400, f"attribute {TTL!r} must be an integer")
        if ttl <= 0:
            return _error(400, f"{TTL} is {ttl}: the event has looped through brokers too often")
        event = event.replace(**{ARRIVAL: now_rfc3339(), TTL: str(ttl)})
        item = Accept(
            namespace, broker, dict(event.attributes), event.data,
            fan_out(config, namespace, broker, event),
        )  # fmt: skip
        try:
            await self._store.accept(item)
        except EventRejected as exc:
            return _error(400, str(exc))
        except StoreUnavailable as exc:
            return _error(503, str(exc))
        return web.Response(status=202)


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


def status_of(
    config: EventingConfig, counts: Mapping[tuple[str, str], Mapping[str, int]]
) -> dict[str, Any]:
    """Brokers and triggers with queue depth and dead-letter counts, for /status."""
    brokers = []
    for (ns, name), broker in config.brokers.items():
        triggers: list[dict[str, Any]] = []
        for t in config.triggers_of(ns, name):
            c = counts.get((ns, t.name), {})
            triggers.append(
                {
                    "name": t.name,
                    "namespace": ns,
                    "subscriber": t.subscriber,
                    "pending": c.get("pending", 0),
                    "delivered": c.get("delivered", 0),
                    "dead_lettered": c.get("dead", 0),
                    "failed": c.get("failed", 0),
                }
            )
        brokers.append(
            {
                "name": name,
                "namespace": ns,
                "address": broker.address,
                "queue_depth": sum(t["pending"] for t in triggers),
                "dead_lettered": sum(t["dead_lettered"] for t in triggers),
                "triggers": triggers,
            }
        )
    return {"brokers": brokers}
