"""One hop of a Sequence or Parallel, attempted as its Knative Subscription delivers it.

A hop is an ordinary delivery row of the event store whose ``flow_hop`` names it
(``Sequence/<name>/steps[1]``, see :func:`hop_key`); the broker's dispatchers claim it like any
other and hand it here. What a subscription does (knative/eventing
``pkg/kncloudevents/event_dispatcher.go``, ``pkg/channel/fanout/fanout_event_handler.go``):

* The event goes to the hop with ``Kn-Namespace``, the event's pass-through headers and, to a
  step, filter or branch subscriber (not to a reply destination), ``Prefer: reply``; in
  structured mode when the subscription's ``delivery.format`` is ``json``.
* A 2xx is delivered. A CloudEvent in it is the reply: it goes on to the hop's ``then`` as a
  new stored event with its delivery, written in the same transaction as this outcome (so a
  crash loses neither and may repeat this hop). A body that is not a CloudEvent is dropped; one
  that claims to be a CloudEvent and is not fails the hop when the reply has somewhere to go
  (the next channel would refuse it). What a reply destination answers goes nowhere.
* Anything else is retried under the subscription's ``delivery`` (filters have none: one
  attempt), then sent to its ``deadLetterSink`` with ``knativeerror*``, which ends that
  chain; without a sink the hop has failed.

The hop limit travels with every event of a flow as :data:`TTL` (``channel.py``): a reply
carries the value of the event it answers, so only entering a flow's address lowers it. It is
left out of what a step, filter or subscriber receives, as the broker hides its TTL from
subscribers, and sent on to a flow's address or the broker, which count it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from knfn.eventing import cloudevent, delivery
from knfn.eventing.cloudevent import Event, InvalidEvent
from knfn.eventing.flows import Flow, Flows, Hop
from knfn.eventing.sending import (
    DEFAULT_ATTEMPT_TIMEOUT,
    Sender,
    delivery_headers,
    reply_headers,
)
from knfn.eventing.store import Accept, Claimed, NewDelivery, Outcome
from knfn.routing import BROKER_INGRESS_TARGET, parse_host

# The hop limit's extension (knfn's own: upstream channels carry no loop counter; loop
# detection for them is an open proposal, knative/eventing#8230). Counted like the broker's
# knativebrokerttl: from 255, lowered by one on each entry into a flow's address.
TTL = "knfnflowttl"
DEFAULT_TTL = 255


def hop_key(flow: Flow, hop: Hop) -> str:
    """What a delivery row's ``flow_hop`` holds: ``<kind>/<name>/<ref>`` (the namespace is the
    row's own)."""
    return f"{type(flow).__name__}/{flow.name}/{hop.ref}"


def resolve(flows: Flows, namespace: str, key: str) -> tuple[Flow, Hop] | str:
    """The flow and hop a ``flow_hop`` names, or why there is none now."""
    kind, _, rest = key.partition("/")
    name, _, ref = rest.partition("/")
    flow = flows.get(kind, namespace, name)
    if flow is None:
        return f"{kind} {namespace}/{name} is gone"
    hop = flow.hops.get(ref)
    if hop is None:
        return f"{kind} {namespace}/{name} has no {ref} any more"
    return flow, hop


def new_delivery(flow: Flow, hop: Hop) -> NewDelivery:
    """The delivery row of a hop: its subscription's name as the trigger, its URL."""
    return NewDelivery(hop.subscription, hop.url, hop.kind, flow_hop=hop_key(flow, hop))


def entry(flow: Flow, event: Event, headers: Mapping[str, str]) -> Accept:
    """An event at the flow's address, stored on its first channel with its first hop(s)."""
    first = flow.first
    channel = first[0].channel if first else flow.name
    deliveries = [new_delivery(flow, hop) for hop in first]
    return Accept(flow.namespace, channel, dict(event.attributes), event.data, deliveries, headers)


def counts_hops(url: str, flows: Flows) -> bool:
    """Whether a destination reads the hop limit: a flow's address or the broker ingress."""
    target = parse_host(urlsplit(url).hostname or "")
    if target is None:
        return False
    return (
        target == BROKER_INGRESS_TARGET or flows.find(target.namespace, target.service) is not None
    )


def reply_event(headers: Mapping[str, str], body: bytes) -> tuple[Event | None, str | None]:
    """The event in a subscriber's 2xx answer, as a channel reads it: (event, None); (None,
    None) when the answer is not a CloudEvent (dropped); (None, why) when it claims to be one
    but is invalid."""
    lowered = {k.lower(): v for k, v in headers.items()}
    media = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (cloudevent.STRUCTURED, cloudevent.BATCH) and "ce-specversion" not in lowered:
        return None, None
    try:
        return cloudevent.from_http(headers, body), None
    except InvalidEvent as exc:
        return None, str(exc)


async def attempt(
    flows: Flows, claimed: Claimed, send: Sender, clock: Callable[[], float]
) -> Outcome:
    """One attempt of a claimed hop (or of its dead letter); the outcome with the next hop."""
    found = resolve(flows, claimed.namespace, claimed.flow_hop or "")
    if isinstance(found, str):
        return Outcome(claimed.id, "failed", None, found)
    flow, hop = found
    to_hop = claimed.kind != "dead-letter"
    attributes = {**claimed.attributes, **claimed.extensions}
    ttl = attributes.get(TTL, str(DEFAULT_TTL))
    if not counts_hops(claimed.destination, flows):
        attributes.pop(TTL, None)
    structured = to_hop and hop.delivery.format == "json"
    encode = cloudevent.to_structured if structured else cloudevent.to_binary
    headers, body = encode(Event(attributes, claimed.data))
    prefer_reply = to_hop and hop.kind != "reply"
    headers.update(delivery_headers(claimed.headers, claimed.namespace, prefer_reply=prefer_reply))
    timeout = hop.delivery.timeout or DEFAULT_ATTEMPT_TIMEOUT
    status, answer_headers, answer, error = await send(claimed.destination, headers, body, timeout)
    if status is not None and 200 <= status < 300:
        if not to_hop or hop.then is None:
            return Outcome(claimed.id, "delivered", status, None)
        reply, problem = reply_event(answer_headers, answer)
        if problem is None:
            if reply is None:  # acknowledged (or filtered out) without an event
                return Outcome(claimed.id, "delivered", status, None)
            follow = flow.hops[hop.then]
            reply = reply.replace(**{TTL: ttl})
            passed = reply_headers(answer_headers.items(), claimed.headers)
            onward = Accept(
                claimed.namespace, follow.channel, dict(reply.attributes), reply.data,
                [new_delivery(flow, follow)], passed,
            )  # fmt: skip
            return Outcome(claimed.id, "delivered", status, None, replies=[onward])
        error = f"answered with an invalid CloudEvent: {problem}"
    return failed(claimed, hop, status, error, answer, clock)


def failed(
    claimed: Claimed,
    hop: Hop,
    status: int | None,
    error: str | None,
    body: bytes,
    clock: Callable[[], float],
) -> Outcome:
    """A failed attempt: retried later, dead-lettered, or failed for good."""
    retries_done = claimed.attempts - 1
    if delivery.is_retryable(status) and retries_done < hop.delivery.retry:
        wait = delivery.backoff_seconds(hop.delivery, retries_done + 1)
        retry_at = datetime.fromtimestamp(clock() + wait, UTC)
        return Outcome(claimed.id, "pending", status, error, retry_at=retry_at)
    if claimed.kind != "dead-letter" and hop.dead_letter_url:
        extensions = delivery.dead_letter_extensions(claimed.destination, status, body, error=error)
        dead = NewDelivery(
            hop.subscription, hop.dead_letter_url, "dead-letter", extensions,
            flow_hop=claimed.flow_hop,
        )  # fmt: skip
        return Outcome(claimed.id, "dead", status, error, followups=[dead])
    return Outcome(claimed.id, "failed", status, error)
