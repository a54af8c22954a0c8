"""A flow's address: its first channel, which stores the event and its first hop(s), then 202.

As the channel's receiver answers (knative/eventing ``pkg/channel/event_receiver.go``): POST
only (OPTIONS 200, other methods 405, with ``Allow``), path ``/`` only (400), an invalid event
400. A body over the ingress's limit is 413, as at the broker ingress. The event and its first
hop(s) (``subscription.entry``) are committed before the 202; a database that cannot take them
gives 503, never 202.

Hop limit: upstream channels carry no loop counter, so a flow that feeds itself (its reply, or
a step, is its own address, or a Broker whose Trigger leads back to it) would go round forever.
Here every event of a flow carries the knfn extension ``knfnflowttl`` (``subscription.TTL``),
read and lowered at each entry exactly as the broker ingress treats ``knativebrokerttl``
(``broker.next_ttl``: absent or not an integer, 255; otherwise one less). An event that
reaches 0 is dropped with 400, as the broker ingress drops one; the drop is logged (the
``report`` line names the flow and the event), counted per flow in ``/status``
(``flows[].hop_limit_dropped``) and in ``knfn_flow_hop_limit_dropped_total``; the delivery that
brought it ends failed (or dead-lettered) with that 400, which ``knfn events`` shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Counter as Metric

from knfn.eventing import subscription
from knfn.eventing.broker import DEFAULT_MAX_EVENT_BYTES, next_ttl, receive_event
from knfn.eventing.flows import Flow, Flows
from knfn.eventing.sending import pass_through
from knfn.eventing.store import Accept, EventRejected, StoreUnavailable
from knfn.metrics import REGISTRY
from knfn.responses import json_error
from knfn.routing import parse_host

ALLOW = {"Allow": "POST, OPTIONS"}
DROPPED = Metric(
    "knfn_flow_hop_limit_dropped",
    "Events a Sequence or Parallel dropped at its address: knfnflowttl ran out (a loop)",
    ("namespace", "kind", "name"),
    registry=REGISTRY,
)


def label(flow: Flow) -> str:
    return f"{type(flow).__name__} {flow.namespace}/{flow.name}"


class FlowIngress:
    """Serves every flow at its address, as its first channel would; mounted by the gateway."""

    def __init__(
        self,
        flows: Callable[[], Flows],
        accept: Callable[[Accept], Awaitable[int]],
        *,
        report: Callable[[str], None] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._flows = flows
        self._accept = accept
        self._report = report
        self._max_event_bytes = max_event_bytes
        self.dropped: Counter[tuple[str, str, str]] = Counter()  # (kind, namespace, name)

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(status=200, headers=ALLOW)
        if request.method != "POST":
            return json_error(
                405, f"{request.method} is not allowed: a flow accepts POST", headers=ALLOW
            )
        target = parse_host(request.host)
        flows = self._flows()
        flow = flows.find(target.namespace, target.service) if target else None
        if flow is None:
            known = sorted(f.address for f in flows.all())
            return json_error(404, f"no Sequence or Parallel at {request.host}; flows: {known}")
        if request.path != "/":
            return json_error(400, f"{flow.address} takes events at /, not {request.path}")
        event = await receive_event(request, self._max_event_bytes)
        if isinstance(event, web.Response):
            return event
        sent = event.attributes.get(subscription.TTL)
        ttl = next_ttl(sent)
        if ttl <= 0:
            return self._drop(flow, event.attributes, sent)
        event = event.replace(**{subscription.TTL: str(ttl)})
        try:
            await self._accept(
                subscription.entry(flow, event, pass_through(request.headers.items()))
            )
        except EventRejected as exc:
            return json_error(400, str(exc))
        except StoreUnavailable as exc:
            return json_error(503, str(exc))
        return web.Response(status=202)

    def _drop(self, flow: Flow, attributes: Mapping[str, str], sent: str | None) -> web.Response:
        kind = type(flow).__name__
        self.dropped[(kind, flow.namespace, flow.name)] += 1
        DROPPED.labels(flow.namespace, kind, flow.name).inc()
        message = (
            f"{label(flow)}: dropped event {attributes.get('id')!r} from "
            f"{attributes.get('source')!r}: {subscription.TTL} {sent!r} leaves 0 once lowered "
            "by one: the event has gone round flows too often (a flow that feeds itself?)"
        )
        if self._report is not None:
            self._report(message)
        return json_error(400, message)


def status_of(
    flows: Flows,
    counts: Mapping[tuple[str, str], Mapping[str, int]],
    dropped: Mapping[tuple[str, str, str], int],
) -> dict[str, Any]:
    """Sequences and Parallels for /status: address, their hops' deliveries by state (counted
    per subscription, the hops' trigger), and the events the hop limit dropped."""
    out = []
    for flow in flows.all():
        kind = type(flow).__name__
        subscriptions = sorted({h.subscription for h in flow.hops.values()})
        total: Counter[str] = Counter()
        for name in subscriptions:
            total.update(counts.get((flow.namespace, name), {}))
        out.append(
            {
                "kind": kind,
                "name": flow.name,
                "namespace": flow.namespace,
                "address": flow.address,
                "subscriptions": subscriptions,
                "pending": total["pending"],
                "delivered": total["delivered"],
                "dead_lettered": total["dead"],
                "failed": total["failed"],
                "hop_limit_dropped": dropped.get((kind, flow.namespace, flow.name), 0),
            }
        )
    return {"flows": out}
