"""The broker: ingress (accept, store, 202); its dispatchers are in ``dispatcher.py``.

Ingress, as knative/eventing pkg/broker/ingress/ingress_handler.go: POST only (OPTIONS 200,
others 405), ``/<namespace>/<broker>`` or 404, an invalid event 400 with the reason, then
``knativearrivaltime`` and ``knativebrokerttl`` (255 when absent; 0 or less is refused) are set,
and the event is fanned out to the matching triggers and committed before the 202.

What becomes of a stored delivery (attempts, retries, dead letters): ``dispatcher.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from knfn.eventing import cloudevent
from knfn.eventing.cloudevent import Event, InvalidEvent
from knfn.eventing.config import EventingConfig
from knfn.eventing.store import Accept, EventStore, NewDelivery, StoreUnavailable

DEFAULT_TTL = 255
TTL = "knativebrokerttl"
ARRIVAL = "knativearrivaltime"
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


class Ingress:
    """The broker-ingress handler, served by the gateway at Knative's broker address."""

    def __init__(self, store: EventStore, config: Callable[[], EventingConfig]) -> None:
        self._store = store
        self._config = config

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
            event = cloudevent.from_http(request.headers, await request.read())
            ttl = int(event.attributes.get(TTL, DEFAULT_TTL))
        except InvalidEvent as exc:
            return _error(400, str(exc))
        except ValueError:
            return _error(400, f"{TTL} must be an integer")
        if ttl <= 0:
            return _error(400, f"{TTL} is {ttl}: the event has looped through brokers too often")
        event = event.replace(**{ARRIVAL: now_rfc3339(), TTL: str(ttl)})
        item = Accept(
            namespace, broker, dict(event.attributes), event.data,
            fan_out(config, namespace, broker, event),
        )  # fmt: skip
        try:
            await self._store.accept(item)
        except StoreUnavailable as exc:
            return _error(503, str(exc))
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
    return {"brokers": brokers}
