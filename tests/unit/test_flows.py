"""Sequence and Parallel: addresses, chaining replies, failures, filters, validation, ingress."""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from knfn import manifests
from knfn.eventing import cloudevent, flows
from knfn.eventing.cloudevent import Event
from knfn.eventing.delivery import DeliverySpec
from knfn.eventing.flows import Branch, FlowIngress, Flows, Parallel, Sequence, Step
from knfn.eventing.sending import SendResult
from knfn.manifests import ManifestError
from knfn.routing import parse_host

NS = "default"
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
        self.waits: list[float] = []

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
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

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def urls(self) -> list[str]:
        return [url for url, _, _ in self.calls]

    def received(self, name: str) -> list[Event]:
        return [ev for url, ev, _ in self.calls if url == f"http://{name}"]


def sequence(*steps: Step | str, reply: str | None = None) -> Sequence:
    parsed = tuple(Step(f"http://{s}") if isinstance(s, str) else s for s in steps)
    return Sequence(NS, "seq", parsed, f"http://{reply}" if reply else None)


def run_sequence(seq: Sequence, subs: Subscribers, ev: Event | None = None) -> flows.Outcome:
    return asyncio.run(flows.run_sequence(seq, ev or event(), subs, sleep=subs.sleep))


def run_parallel(par: Parallel, subs: Subscribers, ev: Event | None = None) -> flows.Outcome:
    return asyncio.run(flows.run_parallel(par, ev or event(), subs, sleep=subs.sleep))


# -- addresses -------------------------------------------------------------------------------


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


def test_flows_are_found_by_the_host_the_gateway_parses() -> None:
    """routing.parse_host of a flow's address finds the flow; other hosts find nothing."""
    seq, par = Sequence(NS, "seq", ()), Parallel(NS, "fan", ())
    known = Flows((seq,), (par,))
    for flow in (seq, par):
        target = parse_host(flow.host)
        assert target is not None and known.find(target.namespace, target.service) is flow
    assert known.find(NS, "hello") is None


# -- Sequence --------------------------------------------------------------------------------


def test_sequence_passes_each_reply_to_the_next_step_and_the_last_to_reply() -> None:
    """Step 1's reply is step 2's input; step 2's reply goes to spec.reply."""
    subs = Subscribers(a=appends("a"), b=appends("b"), out=status(202))
    outcome = run_sequence(sequence("a", "b", reply="out"), subs)
    assert subs.urls() == ["http://a", "http://b", "http://out"]
    assert [e.data for e in subs.received("b") + subs.received("out")] == [b"0a", b"0ab"]
    assert outcome.accepted and outcome.http_status == 202
    assert [h.where for h in outcome.hops] == ["steps[0]", "steps[1]", "reply"]
    assert outcome.event is not None and outcome.event.data == b"0ab"


def test_steps_are_asked_for_a_reply_and_the_reply_destination_is_not() -> None:
    """Steps get Prefer: reply (event_dispatcher.go); every request names the namespace."""
    subs = Subscribers(a=appends("a"), out=status(202))
    run_sequence(sequence("a", reply="out"), subs)
    (_, _, to_step), (_, _, to_reply) = subs.calls
    assert to_step["Prefer"] == "reply" and "Prefer" not in to_reply
    assert to_step["Kn-Namespace"] == to_reply["Kn-Namespace"] == NS


def test_without_reply_the_last_steps_event_is_the_outcome() -> None:
    """No spec.reply: the chain ends at the last step, its reply kept in the outcome."""
    subs = Subscribers(a=appends("a"))
    outcome = run_sequence(sequence("a"), subs)
    assert outcome.accepted and outcome.event is not None and outcome.event.data == b"0a"


@pytest.mark.parametrize(
    "answer",
    [status(202), status(200, b"ok", "text/plain"), status(200, b'{"a": 1}', "application/json")],
)
def test_a_step_answering_without_an_event_ends_the_chain_quietly(answer: Handler) -> None:
    """An empty 2xx, or a body that is not a CloudEvent, is delivered and dropped."""
    subs = Subscribers(a=answer, b=appends("b"), out=status(202))
    outcome = run_sequence(sequence("a", "b", reply="out"), subs)
    assert subs.urls() == ["http://a"]
    assert outcome.accepted and outcome.event is None


def test_a_failing_step_stops_the_chain_with_its_status() -> None:
    """Step 2 answers 500: step 3 and the reply never run; the flow answers 500."""
    subs = Subscribers(a=appends("a"), b=status(500, b"boom"), c=appends("c"), out=status(202))
    outcome = run_sequence(sequence("a", "b", "c", reply="out"), subs)
    assert subs.urls() == ["http://a", "http://b"]
    failed = outcome.failed
    assert failed is not None and (failed.where, failed.url, failed.status) == (
        "steps[1]",
        "http://b",
        500,
    )
    assert not outcome.accepted and outcome.http_status == 500


def test_a_step_that_does_not_answer_fails_with_no_status() -> None:
    """Connection refused: the hop has no status and keeps the error text."""
    subs = Subscribers(a=status(None))
    failed = run_sequence(sequence("a"), subs).failed
    assert failed is not None and failed.status is None
    assert failed.error is not None and "ConnectionRefusedError" in failed.error


def test_a_step_is_retried_under_its_own_delivery() -> None:
    """retry 3, exponential PT0.5S: 503, 503, then a reply; waits 0.5 s and 1 s."""
    spec = DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay=0.5)
    subs = Subscribers(a=[status(503), status(503), appends("a")], b=appends("b"))
    outcome = run_sequence(sequence(Step("http://a", spec), "b"), subs)
    assert subs.urls() == ["http://a"] * 3 + ["http://b"]
    assert subs.waits == [0.5, 1.0]
    assert outcome.accepted and outcome.hops[0].attempts == 3


def test_a_client_error_is_not_retried() -> None:
    """400 is final even with retries left."""
    spec = DeliverySpec(retry=3, backoff_delay=0.1)
    subs = Subscribers(a=status(400))
    outcome = run_sequence(sequence(Step("http://a", spec)), subs)
    assert len(subs.calls) == 1 and outcome.failed is not None and outcome.failed.status == 400


def test_a_dead_lettered_step_ends_the_chain_but_the_flow_accepts() -> None:
    """After its retries the event goes to the step's dead-letter sink with knativeerror*."""
    spec = DeliverySpec(retry=1)
    subs = Subscribers(a=status(503, b"down"), b=appends("b"), dls=status(202))
    step = Step("http://a", spec, "http://dls")
    outcome = run_sequence(sequence(step, "b"), subs)
    assert subs.urls() == ["http://a", "http://a", "http://dls"]
    (dead,) = subs.received("dls")
    assert dead.attributes["knativeerrordest"] == "http://a"
    assert dead.attributes["knativeerrorcode"] == "503"
    assert dead.data == b"0"
    assert outcome.accepted and outcome.dead_lettered and outcome.http_status == 202


def test_a_failing_dead_letter_sink_fails_the_flow() -> None:
    """When the dead-letter sink fails too, the hop fails and says both."""
    subs = Subscribers(a=status(500), dls=status(500))
    outcome = run_sequence(sequence(Step("http://a", dead_letter_url="http://dls")), subs)
    failed = outcome.failed
    assert failed is not None and failed.where == "steps[0]"
    assert failed.error is not None and "dead-letter sink http://dls failed too" in failed.error


def test_an_invalid_reply_event_fails_when_it_has_somewhere_to_go() -> None:
    """ce-specversion without the other attributes: refused before the next step."""
    broken = status(200, b"x", "text/plain")
    subs = Subscribers(a=lambda ev: (200, {"ce-specversion": "1.0"}, b"x"), b=broken)
    outcome = run_sequence(sequence("a", "b"), subs)
    failed = outcome.failed
    assert subs.urls() == ["http://a"]
    assert failed is not None and failed.error is not None and "invalid CloudEvent" in failed.error


def test_a_failing_reply_destination_is_the_failed_hop() -> None:
    """The reply destination is a hop of its own: its failure names spec.reply."""
    subs = Subscribers(a=appends("a"), out=status(404))
    failed = run_sequence(sequence("a", reply="out"), subs).failed
    assert failed is not None and (failed.where, failed.status) == ("reply", 404)


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
    outcome = run_parallel(par, subs)
    assert outcome.accepted and outcome.http_status == 202
    assert [e.data for e in subs.received("s0")] == [b"0+filtered"]
    assert subs.received("s1") == []
    assert [e.data for e in subs.received("r0")] == [b"0+filtereds0"]
    assert [e.data for e in subs.received("shared")] == [b"0s2"]
    b0, b1, b2 = outcome.branches
    assert [h.where for h in b0.hops] == [
        "branches[0].filter",
        "branches[0].subscriber",
        "branches[0].reply",
    ]
    assert b1.filtered and not b0.filtered and not b2.filtered


def test_a_failing_filter_fails_the_parallel() -> None:
    """Filters have no delivery: one attempt, and a 500 fails the whole Parallel."""
    subs = Subscribers(f=status(503), s0=appends("s0"), s1=status(202))
    par = Parallel(NS, "fan", (Branch("http://s0", filter_url="http://f"), Branch("http://s1")))
    outcome = run_parallel(par, subs)
    failed = outcome.failed
    assert failed is not None and (failed.where, failed.status, failed.attempts) == (
        "branches[0].filter",
        503,
        1,
    )
    assert subs.received("s0") == [] and len(subs.received("s1")) == 1
    assert outcome.http_status == 500


def test_a_branch_subscriber_without_reply_destination_only_acknowledges() -> None:
    """No branch or Parallel reply: the subscriber's reply is kept, not sent anywhere."""
    subs = Subscribers(s=appends("s"))
    outcome = run_parallel(Parallel(NS, "fan", (Branch("http://s"),)), subs)
    assert subs.urls() == ["http://s"]
    (branch,) = outcome.branches
    assert branch.event is not None and branch.event.data == b"0s"


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


def serve(known: Flows, subs: Subscribers, reports: list[str]) -> TestServer:
    ingress = FlowIngress(lambda: known, subs, report=reports.append, sleep=subs.sleep)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ingress.handle)
    return TestServer(app)


def test_ingress_answers_as_the_flows_first_channel() -> None:
    """202 when the chain ran; 500 naming the failed hop; 400, 404 and 405 as a channel."""
    seq = Sequence(NS, "seq", (Step("http://a"), Step("http://b")))
    broken = Sequence(NS, "broken", (Step("http://a"), Step("http://down")))
    subs = Subscribers(a=appends("a"), b=status(202), down=status(503))
    reports: list[str] = []

    async def body() -> None:
        async with TestClient(serve(Flows((seq, broken)), subs, reports)) as client:
            headers, data = cloudevent.to_binary(event())

            async def post(host: str, path: str = "/") -> ClientResponse:
                return await client.post(path, data=data, headers={**headers, "Host": host})

            ok = await post(seq.host)
            assert ok.status == 202 and await ok.read() == b""
            assert subs.urls() == ["http://a", "http://b"]

            failed = await post(broken.host)
            assert failed.status == 500
            message = json.loads(await failed.read())["error"]
            assert "Sequence default/broken" in message and "steps[1]" in message
            assert "status 503" in message and reports == [message]

            unknown = await post("nope.default.svc.cluster.local")
            assert unknown.status == 404
            assert seq.address in json.loads(await unknown.read())["error"]

            assert (await post(seq.host, "/extra")).status == 400
            bad = await client.post("/", data=b"{}", headers={"Host": seq.host})
            assert bad.status == 400
            get = await client.get("/", headers={"Host": seq.host})
            assert get.status == 405 and get.headers["Allow"] == "POST, OPTIONS"
            options = await client.options("/", headers={"Host": seq.host})
            assert options.status == 200

    asyncio.run(body())
