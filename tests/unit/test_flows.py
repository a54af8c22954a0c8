"""Sequence and Parallel as queued hops: addresses, hops, each hop's attempt and reply, the
chain driven through an in-memory queue, validation, the address and its hop limit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from knfn import manifests
from knfn.eventing import cloudevent, flows, subscription
from knfn.eventing.channel import FlowIngress, status_of
from knfn.eventing.cloudevent import Event
from knfn.eventing.delivery import DeliverySpec
from knfn.eventing.flows import Branch, Flow, Flows, Parallel, Sequence, Step
from knfn.eventing.sending import SendResult
from knfn.eventing.store import Accept, Claimed, Outcome, StoreUnavailable
from knfn.manifests import ManifestError
from knfn.routing import parse_host

NS = "default"
NOW = 1_000.0  # the fake clock
Answer = tuple[int | None, Mapping[str, str], bytes]
Handler = Callable[[Event], Answer]


def event(data: str = "0", **attributes: str) -> Event:
    base = {"specversion": "1.0", "id": "e1", "source": "/test", "type": "t"}
    return Event({**base, "datacontenttype": "text/plain", **attributes}, data.encode())


def reply(ev: Event, status: int = 200) -> Answer:
    headers, body = cloudevent.to_binary(ev)
    return status, headers, body


def appends(suffix: str) -> Handler:
    """A step that replies with the event, its data extended by ``suffix``."""

    def handle(ev: Event) -> Answer:
        return reply(Event(ev.attributes, (ev.data or b"") + suffix.encode()))

    return handle


def status(code: int | None, body: bytes = b"", content_type: str = "") -> Handler:
    headers = {"Content-Type": content_type} if content_type else {}
    return lambda _ev: (code, headers, body)


class Subscribers:
    """Stands for the HTTP subscribers: a handler per URL, every request recorded."""

    def __init__(self, **handlers: Handler | list[Handler]) -> None:
        self.handlers = {f"http://{name}": h for name, h in handlers.items()}
        self.calls: list[tuple[str, Event, Mapping[str, str]]] = []

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> SendResult:
        ev = cloudevent.from_http(headers, body)
        self.calls.append((url, ev, dict(headers)))
        handler = self.handlers[url]
        if isinstance(handler, list):
            handler = handler.pop(0) if len(handler) > 1 else handler[0]
        code, reply_headers, reply_body = handler(ev)
        if code is None:
            return None, {}, b"", "ConnectionRefusedError: refused"
        return code, reply_headers, reply_body, None

    def urls(self) -> list[str]:
        return [url for url, _, _ in self.calls]

    def received(self, name: str) -> list[Event]:
        return [ev for url, ev, _ in self.calls if url == f"http://{name}"]


def sequence(*steps: Step | str, reply: str | None = None, name: str = "seq") -> Sequence:
    parsed = tuple(Step(f"http://{s}") if isinstance(s, str) else s for s in steps)
    return Sequence(NS, name, parsed, f"http://{reply}" if reply else None)


@dataclass
class Row:
    """A delivery row of the in-memory queue: what the store holds for one hop."""

    id: int
    accept: Accept
    kind: str
    trigger: str
    destination: str
    flow_hop: str | None
    extensions: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    state: str = "pending"
    outcomes: list[Outcome] = field(default_factory=list)


class Queue:
    """The event store and a dispatcher in miniature: rows claimed in order, each outcome
    applied as store.record applies it (follow-ups on the same event, replies as new events),
    retries re-attempted at once with their waits kept."""

    def __init__(self, known: Flows, subs: Subscribers) -> None:
        self.known, self.subs = known, subs
        self.rows: list[Row] = []
        self.waits: list[float] = []

    def add(self, accept: Accept) -> None:
        for d in accept.deliveries:
            self.rows.append(
                Row(len(self.rows) + 1, accept, d.kind, d.trigger, d.destination, d.flow_hop,
                    dict(d.extensions))
            )  # fmt: skip

    def claimed(self, row: Row) -> Claimed:
        a = row.accept
        return Claimed(
            row.id, 1, NS, row.trigger, row.kind, row.destination, row.extensions,
            row.attempts, dict(a.attributes), a.data, a.broker, datetime.now(UTC),
            dict(a.headers), flow_hop=row.flow_hop,
        )  # fmt: skip

    def run(self, limit: int = 100) -> None:
        asyncio.run(self.drain(limit))

    async def drain(self, limit: int = 100) -> None:
        for _ in range(limit):
            due = [r for r in self.rows if r.state == "pending"]
            if not due:
                return
            row = due[0]
            row.attempts += 1
            out = await subscription.attempt(self.known, self.claimed(row), self.subs, lambda: NOW)
            row.state = out.state
            row.outcomes.append(out)
            if out.retry_at is not None:
                self.waits.append(out.retry_at.timestamp() - NOW)
            for follow in out.followups:
                self.add(Accept(NS, row.accept.broker, dict(row.accept.attributes),
                                row.accept.data, [follow], row.accept.headers))  # fmt: skip
            for onward in out.replies:
                self.add(onward)
        raise AssertionError("the queue did not drain")

    def by_trigger(self) -> list[tuple[str, str, str]]:
        return [(r.trigger, r.kind, r.state) for r in self.rows]


def run(flow: Flow, subs: Subscribers, ev: Event | None = None) -> Queue:
    """An event at the flow's address, then every hop until none is left."""
    known = Flows(*(((flow,), ()) if isinstance(flow, Sequence) else ((), (flow,))))
    queue = Queue(known, subs)
    queue.add(subscription.entry(flow, ev or event(), {}))
    queue.run()
    return queue


# -- addresses and hops ----------------------------------------------------------------------


def test_addresses_are_the_first_channels_as_knative_reports_them() -> None:
    """Sequence: channel 0's Service; Parallel: the ingress channel's; both in-cluster hosts."""
    assert Sequence(NS, "seq", ()).address == (
        "http://seq-kn-sequence-0-kn-channel.default.svc.cluster.local"
    )
    assert Parallel("shop", "fan", ()).address == (
        "http://fan-kn-parallel-kn-channel.shop.svc.cluster.local"
    )


def test_long_names_are_shortened_as_kmeta_child_name() -> None:
    """Over 63 characters the parent is cut to fit an MD5 of it, then the suffix."""
    name = "a" * 50
    parent = f"{name}-kn-sequence-0"
    digest = hashlib.md5(parent.encode()).hexdigest()
    host = Sequence(NS, name, ()).host.split(".")[0]
    assert host == parent[: 63 - 32 - len("-kn-channel")] + digest + "-kn-channel"
    assert len(host) == 63


def test_flows_are_found_by_the_host_the_gateway_parses_and_by_name() -> None:
    """routing.parse_host of a flow's address finds the flow; so do its kind and name."""
    seq, par = Sequence(NS, "seq", ()), Parallel(NS, "fan", ())
    known = Flows((seq,), (par,))
    for flow in (seq, par):
        target = parse_host(flow.host)
        assert target is not None and known.find(target.namespace, target.service) is flow
    assert known.find(NS, "hello") is None
    assert known.get("Parallel", NS, "fan") is par and known.get("Sequence", NS, "fan") is None


def test_sequence_hops_are_its_subscriptions_each_replying_to_the_next() -> None:
    """Step i: subscription and channel <name>-kn-sequence-<i>; the last replies to reply."""
    spec = DeliverySpec(retry=2)
    seq = sequence("a", Step("http://b", spec, "http://dls"), reply="out")
    hops = seq.hops
    assert [(h.ref, h.kind, h.subscription, h.then) for h in hops.values()] == [
        ("steps[0]", "step", "seq-kn-sequence-0", "steps[1]"),
        ("steps[1]", "step", "seq-kn-sequence-1", "reply"),
        ("reply", "reply", "seq-kn-sequence-1", None),
    ]
    # The reply is sent by the last step's subscription, under its delivery.
    assert hops["reply"].delivery == spec and hops["reply"].dead_letter_url == "http://dls"
    assert seq.first == (hops["steps[0]"],)


def test_parallel_hops_filter_then_subscriber_then_reply() -> None:
    """A branch with a filter starts there; without one, at its subscriber. Filters have no
    delivery (NewFilterSubscription)."""
    spec = DeliverySpec(retry=3)
    par = Parallel(
        NS, "fan",
        (Branch("http://s0", "http://f0", "http://r0", spec), Branch("http://s1")),
    )  # fmt: skip
    hops = par.hops
    assert [(h.ref, h.kind, h.subscription, h.channel, h.then) for h in hops.values()] == [
        ("branches[0].filter", "filter", "fan-kn-parallel-filter-0", "fan-kn-parallel",
         "branches[0].subscriber"),
        ("branches[0].subscriber", "branch", "fan-kn-parallel-0", "fan-kn-parallel-0",
         "branches[0].reply"),
        ("branches[0].reply", "reply", "fan-kn-parallel-0", "fan-kn-parallel-0", None),
        ("branches[1].subscriber", "branch", "fan-kn-parallel-1", "fan-kn-parallel-1", None),
    ]  # fmt: skip
    assert hops["branches[0].filter"].delivery == DeliverySpec()
    assert hops["branches[0].subscriber"].delivery == spec
    assert [h.ref for h in par.first] == ["branches[0].filter", "branches[1].subscriber"]


def test_the_entry_is_stored_on_the_first_channel_with_the_first_hops() -> None:
    """One event on channel 0, one delivery per first hop, named for its subscription."""
    accept = subscription.entry(sequence("a", "b"), event(), {"X-Request-Id": "r"})
    assert accept.broker == "seq-kn-sequence-0" and accept.headers == {"X-Request-Id": "r"}
    (only,) = accept.deliveries
    assert (only.trigger, only.kind, only.destination, only.flow_hop) == (
        "seq-kn-sequence-0", "step", "http://a", "Sequence/seq/steps[0]",
    )  # fmt: skip


# -- one hop ---------------------------------------------------------------------------------


def test_sequence_passes_each_reply_to_the_next_step_and_the_last_to_reply() -> None:
    """Step 1's reply is step 2's input, stored as a new event on channel 1; step 2's reply
    goes to spec.reply."""
    subs = Subscribers(a=appends("a"), b=appends("b"), out=status(202))
    queue = run(sequence("a", "b", reply="out"), subs)
    assert subs.urls() == ["http://a", "http://b", "http://out"]
    assert [e.data for e in subs.received("b") + subs.received("out")] == [b"0a", b"0ab"]
    assert queue.by_trigger() == [
        ("seq-kn-sequence-0", "step", "delivered"),
        ("seq-kn-sequence-1", "step", "delivered"),
        ("seq-kn-sequence-1", "reply", "delivered"),
    ]
    assert [r.accept.broker for r in queue.rows] == [f"seq-kn-sequence-{i}" for i in (0, 1, 1)]


def test_a_reply_is_committed_with_the_outcome_that_produced_it() -> None:
    """The next hop is in the outcome of the hop that answered (one transaction in the store),
    carrying the hop limit of the event it answers and the response's pass-through headers."""
    subs = Subscribers(a=lambda ev: (200, {**reply(Event(ev.attributes, b"x"))[1],
                                           "Knative-Trace": "t"}, b"x"))  # fmt: skip
    seq = sequence("a", "b")
    accept = subscription.entry(seq, event(**{subscription.TTL: "7"}), {})
    queue = Queue(Flows((seq,)), subs)
    queue.add(accept)
    row = queue.rows[0]
    row.attempts = 1
    out = asyncio.run(subscription.attempt(queue.known, queue.claimed(row), subs, lambda: NOW))
    assert out.state == "delivered" and not out.followups
    (onward,) = out.replies
    assert onward.broker == "seq-kn-sequence-1" and onward.attributes[subscription.TTL] == "7"
    assert onward.headers.get("Knative-Trace") == "t"
    assert [d.flow_hop for d in onward.deliveries] == ["Sequence/seq/steps[1]"]


def test_steps_are_asked_for_a_reply_and_the_reply_destination_is_not() -> None:
    """Steps get Prefer: reply (event_dispatcher.go); every request names the namespace; the
    hop limit is hidden from steps and reply destinations outside knfn."""
    subs = Subscribers(a=appends("a"), out=status(202))
    run(sequence("a", reply="out"), subs)
    (_, to_step_event, to_step), (_, _, to_reply) = subs.calls
    assert to_step["Prefer"] == "reply" and "Prefer" not in to_reply
    assert to_step["Kn-Namespace"] == to_reply["Kn-Namespace"] == NS
    assert subscription.TTL not in to_step_event.attributes


@pytest.mark.parametrize(
    "answer",
    [status(202), status(200, b"ok", "text/plain"), status(200, b'{"a": 1}', "application/json")],
)
def test_a_step_answering_without_an_event_ends_the_chain_quietly(answer: Handler) -> None:
    """An empty 2xx, or a body that is not a CloudEvent, is delivered and dropped."""
    subs = Subscribers(a=answer, b=appends("b"), out=status(202))
    queue = run(sequence("a", "b", reply="out"), subs)
    assert subs.urls() == ["http://a"]
    assert queue.by_trigger() == [("seq-kn-sequence-0", "step", "delivered")]


def test_a_step_is_retried_under_its_own_delivery_then_the_chain_goes_on() -> None:
    """retry 3, exponential PT0.5S: 503, 503, then a reply; waits 0.5 s and 1 s."""
    spec = DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay=0.5)
    subs = Subscribers(a=[status(503), status(503), appends("a")], b=appends("b"))
    queue = run(sequence(Step("http://a", spec), "b"), subs)
    assert subs.urls() == ["http://a"] * 3 + ["http://b"]
    assert queue.waits == [0.5, 1.0]
    assert [(r.attempts, r.state) for r in queue.rows] == [(3, "delivered"), (1, "delivered")]


def test_a_failing_later_step_is_retried_alone() -> None:
    """Step 2 fails twice: only step 2 is attempted again (step 1 is done once its reply is
    stored), as behind a durable channel."""
    spec = DeliverySpec(retry=2)
    subs = Subscribers(a=appends("a"), b=[status(500), status(500), status(202)])
    queue = run(sequence("a", Step("http://b", spec)), subs)
    assert subs.urls() == ["http://a", "http://b", "http://b", "http://b"]
    assert [(r.attempts, r.state) for r in queue.rows] == [(1, "delivered"), (3, "delivered")]


def test_a_client_error_is_not_retried_and_the_hop_fails() -> None:
    """400 is final even with retries left; with no sink the hop ends failed."""
    subs = Subscribers(a=status(400), b=appends("b"))
    queue = run(sequence(Step("http://a", DeliverySpec(retry=3, backoff_delay=0.1)), "b"), subs)
    assert len(subs.calls) == 1
    (row,) = queue.rows
    assert row.state == "failed" and row.outcomes[-1].status == 400


def test_a_step_that_does_not_answer_fails_with_no_status() -> None:
    """Connection refused: no status, the error text kept."""
    queue = run(sequence("a"), Subscribers(a=status(None)))
    (out,) = queue.rows[0].outcomes
    assert out.status is None and out.error is not None and "ConnectionRefused" in out.error


def test_a_dead_lettered_step_ends_the_chain() -> None:
    """After its retries the event goes to the step's dead-letter sink with knativeerror*,
    without Prefer: reply and without the hop limit; the chain stops there."""
    spec = DeliverySpec(retry=1)
    subs = Subscribers(a=status(503, b"down"), b=appends("b"), dls=status(202))
    queue = run(sequence(Step("http://a", spec, "http://dls"), "b"), subs)
    assert subs.urls() == ["http://a", "http://a", "http://dls"]
    (dead,) = subs.received("dls")
    assert dead.attributes["knativeerrordest"] == "http://a"
    assert dead.attributes["knativeerrorcode"] == "503"
    assert dead.data == b"0" and subscription.TTL not in dead.attributes
    assert "Prefer" not in subs.calls[-1][2]
    assert queue.by_trigger() == [
        ("seq-kn-sequence-0", "step", "dead"),
        ("seq-kn-sequence-0", "dead-letter", "delivered"),
    ]


def test_a_failing_dead_letter_sink_is_retried_then_fails() -> None:
    """The dead letter is retried under the hop's delivery; it has no sink of its own."""
    spec = DeliverySpec(retry=1)
    subs = Subscribers(a=status(500), dls=status(500))
    queue = run(sequence(Step("http://a", spec, "http://dls")), subs)
    assert subs.urls() == ["http://a", "http://a", "http://dls", "http://dls"]
    assert [r.state for r in queue.rows] == ["dead", "failed"]


def test_an_invalid_reply_event_fails_when_it_has_somewhere_to_go() -> None:
    """ce-specversion without the other attributes: refused before the next step."""
    subs = Subscribers(a=lambda ev: (200, {"ce-specversion": "1.0"}, b"x"), b=appends("b"))
    queue = run(sequence("a", "b"), subs)
    assert subs.urls() == ["http://a"]
    (out,) = queue.rows[0].outcomes
    assert out.state == "failed" and out.error is not None and "invalid CloudEvent" in out.error


def test_a_failing_reply_destination_is_a_hop_of_its_own() -> None:
    """The reply destination fails (404, retried under the last step's delivery): only the
    reply is attempted again."""
    spec = DeliverySpec(retry=1)
    subs = Subscribers(a=appends("a"), out=status(404))
    queue = run(sequence(Step("http://a", spec), reply="out"), subs)
    assert subs.urls() == ["http://a", "http://out", "http://out"]
    assert queue.by_trigger()[-1] == ("seq-kn-sequence-0", "reply", "failed")


def test_a_hop_of_a_flow_that_is_gone_fails_naming_it() -> None:
    """Manifests changed under a queued hop: it fails, naming the flow or the hop."""
    seq = sequence("a", "b")
    queue = Queue(Flows(), Subscribers())
    queue.add(subscription.entry(seq, event(), {}))
    queue.run()
    (out,) = queue.rows[0].outcomes
    assert out.state == "failed" and out.error == "Sequence default/seq is gone"
    assert subscription.resolve(Flows((sequence("a"),)), NS, "Sequence/seq/steps[1]") == (
        "Sequence default/seq has no steps[1] any more"
    )


def test_json_format_sends_structured_to_the_hop() -> None:
    """A subscription's delivery.format json: the hop gets a structured event."""
    subs = Subscribers(a=status(202))
    run(sequence(Step("http://a", DeliverySpec(format="json"))), subs)
    (_, _, headers) = subs.calls[0]
    assert headers["Content-Type"].startswith("application/cloudevents+json")


# -- Parallel --------------------------------------------------------------------------------


def test_parallel_filters_branches_and_routes_replies() -> None:
    """A filter passes with an event (which replaces the original) and drops with none."""
    subs = Subscribers(
        pass_=appends("+filtered"),
        drop=status(202),
        s0=appends("s0"),
        s1=appends("s1"),
        s2=appends("s2"),
        r0=status(202),
        shared=status(202),
    )
    par = Parallel(
        NS,
        "fan",
        (
            Branch("http://s0", filter_url="http://pass_", reply_url="http://r0"),
            Branch("http://s1", filter_url="http://drop", reply_url="http://shared"),
            Branch("http://s2", reply_url="http://shared"),
        ),
        reply_url="http://shared",
    )
    queue = run(par, subs)
    assert [e.data for e in subs.received("s0")] == [b"0+filtered"]
    assert subs.received("s1") == []
    assert [e.data for e in subs.received("r0")] == [b"0+filtereds0"]
    assert [e.data for e in subs.received("shared")] == [b"0s2"]
    assert {r.state for r in queue.rows} == {"delivered"}
    assert sorted(r.trigger for r in queue.rows) == [
        "fan-kn-parallel-0", "fan-kn-parallel-0", "fan-kn-parallel-2", "fan-kn-parallel-2",
        "fan-kn-parallel-filter-0", "fan-kn-parallel-filter-1",
    ]  # fmt: skip


def test_a_failing_filter_has_one_attempt_and_other_branches_go_on() -> None:
    """Filters have no delivery: one attempt, and only that branch stops."""
    subs = Subscribers(f=status(503), s0=appends("s0"), s1=status(202))
    par = Parallel(NS, "fan", (Branch("http://s0", filter_url="http://f"), Branch("http://s1")))
    queue = run(par, subs)
    assert subs.received("s0") == [] and len(subs.received("s1")) == 1
    assert queue.by_trigger() == [
        ("fan-kn-parallel-filter-0", "filter", "failed"),
        ("fan-kn-parallel-1", "branch", "delivered"),
    ]


def test_a_branch_subscriber_without_reply_destination_only_acknowledges() -> None:
    """No branch or Parallel reply: the subscriber's reply goes nowhere."""
    subs = Subscribers(s=appends("s"))
    queue = run(Parallel(NS, "fan", (Branch("http://s"),)), subs)
    assert subs.urls() == ["http://s"] and len(queue.rows) == 1


def test_the_hop_limit_travels_to_flows_and_the_broker_only() -> None:
    """A step that is another flow's address, or the broker, gets knfnflowttl; others not."""
    inner = Sequence(NS, "inner", (Step("http://x"),))
    known = Flows((inner,))
    assert subscription.counts_hops(inner.address, known)
    assert subscription.counts_hops(
        "http://broker-ingress.knative-eventing.svc.cluster.local/default/default", known
    )
    assert not subscription.counts_hops("http://step.default.svc.cluster.local", known)
    assert not subscription.counts_hops("http://example.com/hook", known)


# -- validation ------------------------------------------------------------------------------

OBJECTS = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: step, namespace: default}
spec: {template: {spec: {containers: [{image: x}]}}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
"""
STEP = "{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: step}}"


def load(
    tmp_path: Path, kind: str, spec: str, extra: str = ""
) -> tuple[list[Sequence], list[Parallel]]:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    doc = (
        f"apiVersion: flows.knative.dev/v1\nkind: {kind}\n"
        "metadata: {name: flow, namespace: default}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
    )
    (base / "objects.yaml").write_text(OBJECTS + "---\n" + extra + doc)
    return flows.load(manifests.load(base))


def test_sequence_loads_with_steps_delivery_and_reply(tmp_path: Path) -> None:
    """Steps resolve to URLs, with their delivery and dead-letter sink; reply to the Broker."""
    (seq,), _ = load(
        tmp_path,
        "Sequence",
        f"""\
        channelTemplate: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}}
        steps:
          - {STEP}
          - uri: http://example.com/hook
            delivery:
              retry: 2
              backoffPolicy: linear
              backoffDelay: PT1S
              deadLetterSink: {STEP}
        reply: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
        """,
    )
    assert [s.url for s in seq.steps] == [
        "http://step.default.svc.cluster.local",
        "http://example.com/hook",
    ]
    assert seq.steps[0].delivery == DeliverySpec() and seq.steps[0].dead_letter_url is None
    assert seq.steps[1].delivery.retry == 2 and seq.steps[1].delivery.backoff_delay == 1.0
    assert seq.steps[1].dead_letter_url == "http://step.default.svc.cluster.local"
    assert (
        seq.reply_url == "http://broker-ingress.knative-eventing.svc.cluster.local/default/default"
    )


def test_parallel_loads_with_branch_reply_falling_back_to_the_parallels(tmp_path: Path) -> None:
    """A branch without its own reply uses spec.reply, as upstream's subscription does."""
    _, (par,) = load(
        tmp_path,
        "Parallel",
        f"""\
        branches:
          - {{filter: {{uri: http://filter.example.com}}, subscriber: {STEP}}}
          - {{subscriber: {STEP}, reply: {{uri: http://own.example.com}}}}
        reply: {{uri: http://shared.example.com}}
        """,
    )
    first, second = par.branches
    assert first.filter_url == "http://filter.example.com"
    assert first.reply_url == "http://shared.example.com"
    assert second.filter_url is None and second.reply_url == "http://own.example.com"


def test_a_step_may_be_another_flow(tmp_path: Path) -> None:
    """A ref to a Sequence or Parallel resolves to its address; the flow must exist."""
    inner = (
        "apiVersion: flows.knative.dev/v1\nkind: Parallel\n"
        "metadata: {name: inner, namespace: default}\n"
        f"spec: {{branches: [{{subscriber: {STEP}}}]}}\n---\n"
    )
    (seq,), (par,) = load(
        tmp_path,
        "Sequence",
        "steps: [{ref: {apiVersion: flows.knative.dev/v1, kind: Parallel, name: inner}}]\n",
        inner,
    )
    assert seq.steps[0].url == par.address


@pytest.mark.parametrize(
    ("kind", "spec", "field", "problem"),
    [
        ("Sequence", "reply: {uri: http://x.example.com}\n", "spec.steps", "at least one step"),
        ("Sequence", "steps: []\n", "spec.steps", "at least one step"),
        ("Sequence", "steps: [{}]\n", "spec.steps[0]", "needs a ref or a uri"),
        ("Sequence", "steps: [{url: http://x}]\n", "spec.steps[0].url", "unknown field"),
        ("Sequence", "steps: [{uri: /relative}]\n", "spec.steps[0].uri", "absolute URL"),
        (
            "Sequence",
            "steps: [{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: nope}}]\n",
            "spec.steps[0]",
            "no Service default/nope",
        ),
        (
            "Sequence",
            "steps: [{ref: {apiVersion: flows.knative.dev/v1, kind: Parallel, name: nope}}]\n",
            "spec.steps[0]",
            "no Parallel default/nope",
        ),
        (
            "Sequence",
            "steps: [{ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, "
            "name: c}}]\n",
            "spec.steps[0]",
            "cannot deliver to a InMemoryChannel",
        ),
        (
            "Sequence",
            "steps: [{uri: http://x.example.com, delivery: {retry: -1}}]\n",
            "spec.steps[0].delivery.retry",
            "whole number",
        ),
        (
            "Sequence",
            "steps: [{uri: http://x.example.com, delivery: {deadLetterSink: {ref: "
            "{apiVersion: serving.knative.dev/v1, kind: Service, name: nope}}}}]\n",
            "spec.steps[0].delivery.deadLetterSink",
            "no Service default/nope",
        ),
        (
            "Sequence",
            f"steps: [{STEP}]\nreply: {{uri: relative}}\n",
            "spec.reply.uri",
            "absolute URL",
        ),
        (
            "Sequence",
            f"steps: [{STEP}]\nchannelTemplate: {{apiVersion: messaging.knative.dev/v1}}\n",
            "spec.channelTemplate.kind",
            "is required",
        ),
        ("Sequence", f"steps: [{STEP}]\nstep: []\n", "spec.step", "unknown field"),
        ("Parallel", "reply: {uri: http://x.example.com}\n", "spec.branches", "at least one"),
        (
            "Parallel",
            "branches: [{filter: {uri: http://f}}]\n",
            "spec.branches[0].subscriber",
            "is required",
        ),
        (
            "Parallel",
            f"branches: [{{subscriber: {STEP}, filter: {{uri: nope}}}}]\n",
            "spec.branches[0].filter.uri",
            "absolute URL",
        ),
        (
            "Parallel",
            f"branches: [{{subscriber: {STEP}, reply: {{}}}}]\n",
            "spec.branches[0].reply",
            "needs a ref or a uri",
        ),
        (
            "Parallel",
            f"branches: [{{subscriber: {STEP}, delivery: {{backoffPolicy: random}}}}]\n",
            "spec.branches[0].delivery.backoffPolicy",
            "exponential or linear",
        ),
        (
            "Parallel",
            f"branches: [{{subscriber: {STEP}, subscribers: []}}]\n",
            "spec.branches[0].subscribers",
            "unknown field",
        ),
    ],
)
def test_validation_errors_name_file_object_and_field(
    tmp_path: Path, kind: str, spec: str, field: str, problem: str
) -> None:
    """Each invalid flow stops loading with the file, the object and the field."""
    with pytest.raises(ManifestError) as info:
        load(tmp_path, kind, spec)
    err = info.value
    assert err.path.name == "objects.yaml" and err.obj == f"{kind} flow"
    assert err.field == field
    assert problem in err.problem


# -- the address, served ---------------------------------------------------------------------


class Accepted:
    """Stands for the event store's accept: records what would be committed, or refuses."""

    def __init__(self) -> None:
        self.items: list[Accept] = []
        self.down = False

    async def __call__(self, item: Accept) -> int:
        if self.down:
            raise StoreUnavailable("the broker's database is unavailable: gone")
        self.items.append(item)
        return len(self.items)


def serve(known: Flows, accepted: Accepted, reports: list[str]) -> FlowIngress:
    return FlowIngress(lambda: known, accepted, report=reports.append, max_event_bytes=1024)


def client_of(ingress: FlowIngress) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ingress.handle)
    return TestClient(TestServer(app))


def test_ingress_answers_202_once_the_event_and_first_hop_are_stored() -> None:
    """202 after the accept; 503 when the store is down; 400, 404, 405, 413 as a channel."""
    seq = sequence("a", "b")
    accepted, reports = Accepted(), []

    async def body() -> None:
        async with client_of(serve(Flows((seq,)), accepted, reports)) as client:
            headers, data = cloudevent.to_binary(event())

            async def post(host: str, path: str = "/", payload: bytes = data) -> ClientResponse:
                return await client.post(path, data=payload, headers={**headers, "Host": host})

            ok = await post(seq.host)
            assert ok.status == 202 and await ok.read() == b""
            (item,) = accepted.items
            assert item.broker == "seq-kn-sequence-0" and item.attributes["id"] == "e1"
            assert item.attributes[subscription.TTL] == "255"
            assert [d.destination for d in item.deliveries] == ["http://a"]

            accepted.down = True
            down = await post(seq.host)
            assert down.status == 503 and "unavailable" in json.loads(await down.read())["error"]
            accepted.down = False

            unknown = await post("nope.default.svc.cluster.local")
            assert unknown.status == 404
            assert seq.address in json.loads(await unknown.read())["error"]
            assert (await post(seq.host, "/extra")).status == 400
            assert (await post(seq.host, payload=b"x" * 2000)).status == 413
            bad = await client.post("/", data=b"{}", headers={"Host": seq.host})
            assert bad.status == 400
            get = await client.get("/", headers={"Host": seq.host})
            assert get.status == 405 and get.headers["Allow"] == "POST, OPTIONS"
            options = await client.options("/", headers={"Host": seq.host})
            assert options.status == 200
            assert len(accepted.items) == 1 and reports == []

    asyncio.run(body())


def test_the_hop_limit_lowers_on_entry_and_drops_at_zero() -> None:
    """knfnflowttl as the broker's TTL: one less at each entry; leaving 0, the event is
    dropped with 400, logged and counted per flow (and in /status)."""
    seq = sequence("a", name="loop")
    accepted, reports = Accepted(), []
    ingress = serve(Flows((seq,)), accepted, reports)

    async def body() -> None:
        async with client_of(ingress) as client:

            async def post(ttl: str) -> ClientResponse:
                headers, data = cloudevent.to_binary(event(**{subscription.TTL: ttl}))
                return await client.post("/", data=data, headers={**headers, "Host": seq.host})

            assert (await post("3")).status == 202
            assert accepted.items[-1].attributes[subscription.TTL] == "2"
            dropped = await post("1")
            assert dropped.status == 400
            message = json.loads(await dropped.read())["error"]
            assert "Sequence default/loop" in message and "'e1'" in message
            assert reports == [message] and len(accepted.items) == 1

    asyncio.run(body())
    assert ingress.dropped == {("Sequence", NS, "loop"): 1}
    (flow_status,) = status_of(Flows((seq,)), {}, ingress.dropped)["flows"]
    assert flow_status["hop_limit_dropped"] == 1


def test_a_self_feeding_sequence_stops_at_the_hop_limit() -> None:
    """A Sequence whose reply is its own address: each round enters the address again, so the
    hop limit (sent as 4) lets it round three times, then the reply hop fails with the 400."""
    seq = Sequence(NS, "loop", (Step("http://a"),), sequence("x", name="loop").address)
    known = Flows((seq,))
    accepted, reports = Accepted(), []
    ingress = serve(known, accepted, reports)

    async def body() -> Queue:
        async with client_of(ingress) as client:

            async def to_address(
                url: str, headers: Mapping[str, str], data: bytes, timeout: float | None
            ) -> SendResult:
                if url != seq.address:
                    return await steps(url, headers, data, timeout)
                resp = await client.post("/", data=data, headers={**headers, "Host": seq.host})
                return resp.status, dict(resp.headers), await resp.read(), None

            steps = Subscribers(a=appends("+"))
            queue = Queue(known, steps)
            queue.subs = to_address  # type: ignore[assignment]
            first = subscription.entry(seq, event(**{subscription.TTL: "4"}), {})
            first = Accept(NS, first.broker, {**first.attributes, subscription.TTL: "3"},
                           first.data, first.deliveries)  # fmt: skip
            queue.add(first)
            while True:
                before = len(accepted.items)
                await queue.drain()
                if len(accepted.items) == before:
                    return queue
                for item in accepted.items[before:]:
                    queue.add(item)

    queue = asyncio.run(body())
    steps_done = [r for r in queue.rows if r.kind == "step"]
    assert len(steps_done) == 3 and ingress.dropped[("Sequence", NS, "loop")] == 1
    last = queue.rows[-1]
    assert (last.kind, last.state, last.outcomes[-1].status) == ("reply", "failed", 400)


def test_status_counts_a_flows_hops_by_state() -> None:
    """Deliveries are counted by their subscription (the trigger column), summed per flow."""
    seq = sequence("a", "b", reply="out")
    counts = {
        (NS, "seq-kn-sequence-0"): {"delivered": 3, "dead": 1},
        (NS, "seq-kn-sequence-1"): {"pending": 2, "failed": 1},
        (NS, "other"): {"delivered": 100},
    }
    (out,) = status_of(Flows((seq,)), counts, {})["flows"]
    assert (out["kind"], out["address"], out["subscriptions"]) == (
        "Sequence", seq.address, ["seq-kn-sequence-0", "seq-kn-sequence-1"],
    )  # fmt: skip
    assert (out["pending"], out["delivered"], out["dead_lettered"], out["failed"]) == (2, 3, 1, 1)
