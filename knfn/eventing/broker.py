"""The broker: ingress (accept, store, 202); its dispatchers are in ``dispatcher.py``.

Ingress, as knative/eventing pkg/broker/ingress/ingress_handler.go: every answer carries
``Allow: POST, OPTIONS``; OPTIONS answers 200 with ``WebHook-Allowed-Origin: *`` and
``WebHook-Allowed-Rate: *`` (the CloudEvents HTTP webhook spec's validation handshake,
cloudevents/spec ``cloudevents/http-webhook.md`` 4.2: any origin, no rate limit); other methods
405; ``/<namespace>/<broker>`` or 404; an invalid event 400 with the reason. Then
``knativearrivaltime`` is set and ``knativebrokerttl`` handled by :func:`next_ttl`; the event,
with the request's pass-through headers (``sending.pass_through``), is fanned out to the
matching triggers and committed before the 202.

CloudEvents 0.3 events are accepted and passed on as 0.3, as the Go SDK the ingress is built
on reads and writes them (``cloudevent.py``).

What becomes of a stored delivery (attempts, retries, dead letters): ``dispatcher.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from knfn.errors import KnfnError
from knfn.eventing import cloudevent
from knfn.eventing.cloudevent import Event, InvalidEvent
from knfn.eventing.config import EventingConfig
from knfn.eventing.sending import pass_through
from knfn.eventing.store import Accept, EventRejected, EventStore, NewDelivery, StoreUnavailable
from knfn.responses import json_error

DEFAULT_TTL = 255
TTL = "knativebrokerttl"
ARRIVAL = "knativearrivaltime"
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
READ_CHUNK = 64 * 1024
NOT_A_CLOUDEVENT = "received a non-empty response that is not a CloudEvent"
ALLOW = {"Allow": "POST, OPTIONS"}
# The webhook validation answer: any origin may send, at any rate (ingress_handler.go).
WEBHOOK_ALLOWED = {"WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": "*"}
_INT32 = (-(2**31), 2**31 - 1)
_GO_HEX_FLOAT = re.compile(r"[+-]?0[xX][0-9a-fA-F.]+[pP][+-]?\d+")


def parse_go_integer(text: str) -> int | None:
    """The integer the Go SDK reads from an attribute value (sdk-go v2 ``types.ParseInteger``):
    a Go float literal, truncated toward zero, within int32; None when it is not one."""
    if text != text.strip() or "_" in text:
        return None  # strconv.ParseFloat takes neither spaces nor (without 0x) underscores
    try:
        number = float.fromhex(text) if _GO_HEX_FLOAT.fullmatch(text) else float(text)
    except ValueError:
        return None
    if math.isnan(number) or not _INT32[0] <= number <= _INT32[1]:
        return None
    return int(number)


def next_ttl(raw: str | None) -> int:
    """The ``knativebrokerttl`` the ingress stores, from the one the event came with.

    knative/eventing pkg/broker/ttl.go TTLDefaulter, run by the ingress on every event (also a
    reply coming back): absent or not an integer, it is set to the default (255, MAX_TTL of
    cmd/broker/ingress/main.go); otherwise it is lowered by one, but not below 0. The ingress
    then refuses a TTL of 0 (400): the event has gone round too often.
    """
    current = None if raw is None else parse_go_integer(raw)
    if current is None:
        return DEFAULT_TTL
    return max(current - 1, 0)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def fan_out(config: EventingConfig, namespace: str, broker: str, event: Event) -> list[NewDelivery]:
    """One delivery per trigger of the broker whose filter matches the event."""
    return [
        NewDelivery(t.name, t.subscriber, order_key=t.order_key(event.attributes))
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


async def receive_event(request: web.Request, limit: int) -> Event | web.Response:
    """The CloudEvent a request carries (body read within limit), or the answer that refuses
    it: 413 over the limit, 400 for an invalid event. The broker's and the channels' ingress."""
    try:
        body = await read_bounded(request, limit)
    except EventTooLarge as exc:
        return json_error(413, str(exc))
    try:
        return cloudevent.from_http(request.headers, body)
    except InvalidEvent as exc:
        return json_error(400, str(exc))


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
        response = await self._handle(request)
        response.headers.update(ALLOW)  # on every answer, as ingress_handler.go
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if request.method == "OPTIONS":
            return web.Response(status=200, headers=WEBHOOK_ALLOWED)
        if request.method != "POST":
            return json_error(405, f"{request.method} is not allowed: the broker accepts POST")
        config = self._config()
        if len(parts) != 2 or (parts[0], parts[1]) not in config.brokers:
            known = sorted(f"/{ns}/{name}" for ns, name in config.brokers)
            return json_error(404, f"no broker at {request.path}; brokers: {known}")
        namespace, broker = parts
        event = await receive_event(request, self._max_event_bytes)
        if isinstance(event, web.Response):
            return event
        ttl = next_ttl(event.attributes.get(TTL))
        if ttl <= 0:
            return json_error(
                400,
                f"{TTL} {event.attributes.get(TTL)!r} leaves {ttl} once lowered by one: "
                "the event has looped through brokers too often",
            )
        event = event.replace(**{ARRIVAL: now_rfc3339(), TTL: str(ttl)})
        item = Accept(
            namespace, broker, dict(event.attributes), event.data,
            fan_out(config, namespace, broker, event),
            pass_through(request.headers.items()),
        )  # fmt: skip
        try:
            await self._store.accept(item)
        except EventRejected as exc:
            return json_error(400, str(exc))
        except StoreUnavailable as exc:
            return json_error(503, str(exc))
        return web.Response(status=202)


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
    # Triggers the cluster would keep with Ready=False (knfn dev --allow-not-ready-triggers).
    return {"brokers": brokers, "not_ready_triggers": [t.status() for t in config.not_ready]}
