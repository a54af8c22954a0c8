"""Sequence and Parallel (flows.knative.dev/v1): a chain of steps, and filtered branches.

Upstream (knative/eventing ``pkg/reconciler/sequence``, ``pkg/reconciler/parallel``) builds a
flow from Channels and Subscriptions:

* Sequence: one channel per step, ``<name>-kn-sequence-<i>``; the subscription of step *i*
  sends the event to the step and the step's reply to channel *i+1*, the last step's reply to
  ``spec.reply`` when there is one (``resources/subscription.go``). The Sequence's address is
  that of channel 0.
* Parallel: an ingress channel ``<name>-kn-parallel`` and one channel per branch,
  ``<name>-kn-parallel-<i>``. For each branch a filter subscription on the ingress channel
  sends the event to ``filter`` with the branch channel as its reply (or, without a filter,
  straight to the branch channel); the branch subscription sends to ``subscriber`` with
  ``branch.reply``, else ``spec.reply``, as its reply. So a filter passes an event by
  answering with an event (which replaces it) and drops it by answering with none.
* What a subscription does with an answer (``pkg/kncloudevents/event_dispatcher.go``): the
  request carries ``Prefer: reply``; a 2xx is delivered, and its body goes on to the reply
  destination only when it is a CloudEvent (a body that is not one is dropped, unlike the
  broker, which counts it as a failure); anything else is retried per the step's or branch's
  ``delivery`` (filters have none) and then dead-lettered to its ``deadLetterSink``, which
  ends that chain. What reaches the reply destination last is not answered to anyone.
* The address is the first channel's: an InMemoryChannel (the default channelTemplate)
  answers at ``http://<channel>-kn-channel.<namespace>.svc.cluster.local``
  (``pkg/reconciler/inmemorychannel/controller``, with knative.dev/pkg ``kmeta.ChildName``
  shortening names over 63 characters). So :attr:`Sequence.address` is
  ``http://<name>-kn-sequence-0-kn-channel.<ns>.svc.cluster.local`` and
  :attr:`Parallel.address` ``http://<name>-kn-parallel-kn-channel.<ns>.svc.cluster.local``.
  The channel answers (``pkg/channel/event_receiver.go``): POST only (OPTIONS 200, others
  405), path ``/`` only (400), an invalid event 400, and 202 with an empty body once the
  event was handed on, or 500 when that failed.

Design: the chain runs synchronously inside the request to the flow's address. That is what
upstream's default channel does: an InMemoryChannel dispatches synchronously unless annotated
``messaging.knative.dev/async-handler`` (``pkg/channel/fanout/fanout_event_handler.go``), so
the POST to a Sequence returns only after every step has run, with 500 when one failed. It
also keeps the flow as durable as its caller without a second queue: nothing is acknowledged
(202) before the whole chain has run or been dead-lettered, so a Trigger's delivery (stored in
Postgres) or a PingSource (which retries) sees the failure and retries the flow, giving
at-least-once delivery to every step, where upstream's in-memory channels drop events on a
restart. Expressing each hop as stored deliveries would add acknowledged-but-not-done states
that the synchronous channel does not have.

One simplification: upstream, when step *i+1* finally fails, the channel in front of it
answers 500 to step *i*'s subscription, which then retries forwarding the reply (re-running
step *i+1* and everything after it) under step *i*'s retry policy and may dead-letter the
reply to step *i*'s sink. Here each hop is retried under its own policy only and the chain
stops at the hop that failed; :attr:`Outcome.failed` names it with its last status.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from knfn.eventing import cloudevent, delivery, destinations
from knfn.eventing.cloudevent import Event, InvalidEvent
from knfn.eventing.delivery import DeliveryError, DeliverySpec, Destination
from knfn.eventing.errors import UnresolvedDestination
from knfn.eventing.sending import DEFAULT_ATTEMPT_TIMEOUT, Sender
from knfn.manifests import ManifestError, Manifests
from knfn.routing import parse_host

FLOWS_GROUP = "flows.knative.dev"
CHANNEL_SUFFIX = "-kn-channel"  # pkg/channel/references.go K8ServiceNameSuffix
NO_DELIVERY = DeliverySpec()  # a subscription without spec.delivery: one attempt, no sink


Sleep = Callable[[float], Awaitable[None]]


def child_name(parent: str, suffix: str) -> str:
    """A Kubernetes child name (knative.dev/pkg kmeta.ChildName): over 63 characters, the
    parent is cut and an MD5 of it keeps the name unique."""
    longest, md5_length = 63, 32
    if len(parent) > longest - len(suffix):
        digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
        parent = parent[: longest - md5_length - len(suffix)] + digest
    return parent + suffix


def sequence_host(namespace: str, name: str) -> str:
    """The host of the Sequence's address: its first channel's Service."""
    return f"{child_name(f'{name}-kn-sequence-0', CHANNEL_SUFFIX)}.{namespace}.svc.cluster.local"


def parallel_host(namespace: str, name: str) -> str:
    """The host of the Parallel's address: its ingress channel's Service."""
    return f"{child_name(f'{name}-kn-parallel', CHANNEL_SUFFIX)}.{namespace}.svc.cluster.local"


_HOSTS: dict[str, Callable[[str, str], str]] = {
    "Sequence": sequence_host,
    "Parallel": parallel_host,
}


# -- the flows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a Sequence: where it is, and its subscription's delivery."""

    url: str
    delivery: DeliverySpec = NO_DELIVERY
    dead_letter_url: str | None = None


@dataclass(frozen=True)
class Sequence:
    namespace: str
    name: str
    steps: tuple[Step, ...]
    reply_url: str | None = None

    @property
    def host(self) -> str:
        return sequence_host(self.namespace, self.name)

    @property
    def address(self) -> str:
        """What Knative reports as ``status.address.url``."""
        return f"http://{self.host}"


@dataclass(frozen=True)
class Branch:
    """One branch of a Parallel; ``reply_url`` is its own reply, else the Parallel's."""

    subscriber_url: str
    filter_url: str | None = None
    reply_url: str | None = None
    delivery: DeliverySpec = NO_DELIVERY
    dead_letter_url: str | None = None


@dataclass(frozen=True)
class Parallel:
    namespace: str
    name: str
    branches: tuple[Branch, ...]
    reply_url: str | None = None

    @property
    def host(self) -> str:
        return parallel_host(self.namespace, self.name)

    @property
    def address(self) -> str:
        """What Knative reports as ``status.address.url``."""
        return f"http://{self.host}"


Flow = Sequence | Parallel


@dataclass(frozen=True)
class Flows:
    """The flows of the manifests, found by the host of their address."""

    sequences: tuple[Sequence, ...] = ()
    parallels: tuple[Parallel, ...] = ()

    def all(self) -> tuple[Flow, ...]:
        return (*self.sequences, *self.parallels)

    def find(self, namespace: str, service: str) -> Flow | None:
        """The flow whose address is ``<service>.<namespace>`` (as routing.parse_host splits)."""
        wanted = f"{service}.{namespace}.svc.cluster.local"
        return next((f for f in self.all() if f.host == wanted), None)


# -- how a flow ended ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One destination a flow sent an event to, and how that ended."""

    where: str  # steps[1], reply, branches[0].filter, branches[0].subscriber, branches[0].reply
    url: str
    status: int | None  # the last response's status; None: no response
    attempts: int
    error: str | None = None
    dead_lettered: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None

    @property
    def ended_chain(self) -> bool:
        """Failed or dead-lettered: nothing after this hop ran."""
        return not self.delivered


@dataclass(frozen=True)
class Outcome:
    """How a flow handled one event: its hops in order (a Parallel: one Outcome per branch)."""

    hops: tuple[Hop, ...] = ()
    event: Event | None = None  # the last event produced (a step's or subscriber's reply)
    branches: tuple[Outcome, ...] = ()
    filtered: bool = False  # a Parallel branch whose filter answered without an event

    @property
    def failed(self) -> Hop | None:
        """The first hop that failed and was not dead-lettered, if any."""
        for hop in self.hops:
            if not hop.delivered and not hop.dead_lettered:
                return hop
        return next((f for b in self.branches if (f := b.failed) is not None), None)

    @property
    def accepted(self) -> bool:
        return self.failed is None

    @property
    def dead_lettered(self) -> bool:
        return any(h.dead_lettered for h in self.hops) or any(
            b.dead_lettered for b in self.branches
        )

    @property
    def http_status(self) -> int:
        """What the flow's address answers: 202, or 500 when a hop failed."""
        return 202 if self.accepted else 500


# -- running a flow --------------------------------------------------------------------------


async def run_sequence(
    seq: Sequence, event: Event, send: Sender, *, sleep: Sleep = asyncio.sleep
) -> Outcome:
    """Send the event through every step, each reply to the next; the last reply to ``reply``."""
    hops: list[Hop] = []
    current = event
    for i, step in enumerate(seq.steps):
        hop, reply = await _deliver(
            f"steps[{i}]", step.url, current, step.delivery, step.dead_letter_url, send, sleep,
            namespace=seq.namespace, has_next=i + 1 < len(seq.steps) or seq.reply_url is not None,
        )  # fmt: skip
        hops.append(hop)
        if hop.ended_chain or reply is None:
            # Failed, dead-lettered, or acknowledged without an event: nothing to pass on.
            return Outcome(tuple(hops), reply)
        current = reply
    if seq.reply_url is not None:
        last = seq.steps[-1]
        hop, _ = await _deliver(
            "reply", seq.reply_url, current, last.delivery, last.dead_letter_url, send, sleep,
            namespace=seq.namespace, prefer_reply=False,
        )  # fmt: skip
        hops.append(hop)
    return Outcome(tuple(hops), current)


async def run_parallel(
    par: Parallel, event: Event, send: Sender, *, sleep: Sleep = asyncio.sleep
) -> Outcome:
    """Offer the event to every branch at once; see the module docstring for each branch."""
    results = await asyncio.gather(
        *(_run_branch(par.namespace, i, b, event, send, sleep) for i, b in enumerate(par.branches))
    )
    return Outcome(branches=tuple(results))


async def run_flow(
    flow: Flow, event: Event, send: Sender, *, sleep: Sleep = asyncio.sleep
) -> Outcome:
    """Run a Sequence or a Parallel on one event."""
    if isinstance(flow, Sequence):
        return await run_sequence(flow, event, send, sleep=sleep)
    return await run_parallel(flow, event, send, sleep=sleep)


async def _run_branch(
    namespace: str, i: int, branch: Branch, event: Event, send: Sender, sleep: Sleep
) -> Outcome:
    hops: list[Hop] = []
    current = event
    if branch.filter_url is not None:
        hop, passed = await _deliver(
            f"branches[{i}].filter", branch.filter_url, event, NO_DELIVERY, None, send, sleep,
            namespace=namespace,
        )  # fmt: skip
        hops.append(hop)
        if hop.ended_chain:
            return Outcome(tuple(hops))
        if passed is None:
            return Outcome(tuple(hops), filtered=True)
        current = passed
    hop, reply = await _deliver(
        f"branches[{i}].subscriber", branch.subscriber_url, current, branch.delivery,
        branch.dead_letter_url, send, sleep, namespace=namespace,
        has_next=branch.reply_url is not None,
    )  # fmt: skip
    hops.append(hop)
    if not hop.ended_chain and reply is not None and branch.reply_url is not None:
        hop, _ = await _deliver(
            f"branches[{i}].reply", branch.reply_url, reply, branch.delivery,
            branch.dead_letter_url, send, sleep, namespace=namespace, prefer_reply=False,
        )  # fmt: skip
        hops.append(hop)
    return Outcome(tuple(hops), reply)


async def _deliver(
    where: str,
    url: str,
    event: Event,
    spec: DeliverySpec,
    dead_letter_url: str | None,
    send: Sender,
    sleep: Sleep,
    *,
    namespace: str,
    prefer_reply: bool = True,
    has_next: bool = True,
) -> tuple[Hop, Event | None]:
    """One subscription hop: attempts with retries, then the dead-letter sink; and the reply."""
    extra = {"Kn-Namespace": namespace}
    if prefer_reply:
        extra["Prefer"] = "reply"
    status, headers, body, error, attempts = await _attempts(url, event, spec, send, sleep, extra)
    if status is not None and 200 <= status < 300:
        reply, problem = reply_event(headers, body)
        if problem is None or not has_next:
            return Hop(where, url, status, attempts), reply
        # Upstream hands the malformed reply on and the next channel refuses it with 400.
        error = f"answered with an invalid CloudEvent: {problem}"
    if dead_letter_url is None:
        return Hop(where, url, status, attempts, error), None
    extensions = delivery.dead_letter_extensions(url, status, body, error=error)
    dead = event.replace(**extensions)
    dl_status, _, _, dl_error, _ = await _attempts(dead_letter_url, dead, spec, send, sleep, {})
    if dl_status is not None and 200 <= dl_status < 300:
        return Hop(where, url, status, attempts, error, dead_lettered=True), None
    why = f"status {dl_status}" if dl_status is not None else dl_error
    return Hop(
        where, url, status, attempts,
        f"{error or f'status {status}'}; the dead-letter sink {dead_letter_url} failed too: {why}",
    ), None  # fmt: skip


async def _attempts(
    url: str,
    event: Event,
    spec: DeliverySpec,
    send: Sender,
    sleep: Sleep,
    extra_headers: Mapping[str, str],
) -> tuple[int | None, Mapping[str, str], bytes, str | None, int]:
    """Send until a 2xx, a failure that is not retried, or the retries are spent."""
    encode = cloudevent.to_structured if spec.format == "json" else cloudevent.to_binary
    headers, body = encode(event)
    headers.update(extra_headers)
    timeout = spec.timeout or DEFAULT_ATTEMPT_TIMEOUT
    attempts = 0
    while True:
        status, reply_headers, reply_body, error = await send(url, headers, body, timeout)
        attempts += 1
        if status is not None and 200 <= status < 300:
            return status, reply_headers, reply_body, None, attempts
        if not delivery.is_retryable(status) or attempts > spec.retry:
            return status, reply_headers, reply_body, error, attempts
        await sleep(delivery.backoff_seconds(spec, attempts))


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


# -- the flow's address ----------------------------------------------------------------------


class FlowIngress:
    """Serves every flow at its address, as its first channel would; mounted by the gateway."""

    def __init__(
        self,
        flows: Callable[[], Flows],
        send: Sender,
        *,
        report: Callable[[str], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._flows = flows
        self._send = send
        self._report = report
        self._sleep = sleep

    async def handle(self, request: web.Request) -> web.Response:
        allow = {"Allow": "POST, OPTIONS"}
        if request.method == "OPTIONS":
            return web.Response(status=200, headers=allow)
        if request.method != "POST":
            return _error(405, f"{request.method} is not allowed: a flow accepts POST", allow)
        target = parse_host(request.host)
        flows = self._flows()
        flow = flows.find(target.namespace, target.service) if target else None
        if flow is None:
            known = sorted(f.address for f in flows.all())
            return _error(404, f"no Sequence or Parallel at {request.host}; flows: {known}")
        if request.path != "/":
            return _error(400, f"{flow.address} takes events at /, not {request.path}")
        try:
            event = cloudevent.from_http(request.headers, await request.read())
        except InvalidEvent as exc:
            return _error(400, str(exc))
        outcome = await run_flow(flow, event, self._send, sleep=self._sleep)
        failed = outcome.failed
        if failed is None:
            return web.Response(status=202)
        message = (
            f"{type(flow).__name__} {flow.namespace}/{flow.name}: {failed.where} ({failed.url}) "
            f"failed after {failed.attempts} attempt(s): "
            + (failed.error or f"status {failed.status}")
        )
        if self._report is not None:
            self._report(message)
        return _error(outcome.http_status, message)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


# -- the manifests ---------------------------------------------------------------------------


def destination_url(m: Manifests, dest: Destination, namespace: str) -> str:
    """Where a Destination in ``namespace`` delivers; ValueError when it names nothing known."""
    try:
        return destinations.resolve(m, dest, namespace)
    except UnresolvedDestination as exc:
        raise ValueError(exc.problem) from None


def load(m: Manifests) -> tuple[list[Sequence], list[Parallel]]:
    """The Sequences and Parallels of the manifests; ManifestError names file, object, field."""
    sequences: list[Sequence] = []
    parallels: list[Parallel] = []
    for path, doc in m.others:
        if doc.get("kind") == "Sequence":
            sequences.append(_Loader(m, path, doc).sequence())
        elif doc.get("kind") == "Parallel":
            parallels.append(_Loader(m, path, doc).parallel())
    return sequences, parallels


def index(m: Manifests) -> Flows:
    """:func:`load`, as the lookup the gateway needs."""
    sequences, parallels = load(m)
    return Flows(tuple(sequences), tuple(parallels))


class _Loader:
    """Validates one Sequence or Parallel (flows/v1 sequence_validation.go and
    parallel_validation.go, plus unknown fields, which the API server refuses)."""

    def __init__(self, m: Manifests, path: Path, doc: Mapping[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        self.m, self.path = m, path
        self.kind = str(doc.get("kind"))
        self.name = str(meta.get("name"))
        self.namespace = str(meta.get("namespace") or "default")
        self.spec = doc.get("spec") or {}
        if not isinstance(self.spec, Mapping):
            raise self.error("spec", "must be an object")

    def error(self, fld: str, problem: str) -> ManifestError:
        return ManifestError(self.path, f"{self.kind} {self.name}", fld, problem)

    def sequence(self) -> Sequence:
        self.must_be_object(self.spec, "spec")
        steps = self.spec.get("steps")
        if not isinstance(steps, list) or not steps:
            raise self.error("spec.steps", "needs at least one step (a destination)")
        parsed = []
        for i, raw in enumerate(steps):
            where = f"spec.steps[{i}]"
            self.must_be_object(raw, where)
            url = self.url(raw, where)
            spec, dead_letter = self.delivery(raw, where)
            parsed.append(Step(url, spec, dead_letter))
        self.channel_template()
        return Sequence(self.namespace, self.name, tuple(parsed), self.reply())

    def parallel(self) -> Parallel:
        self.must_be_object(self.spec, "spec")
        branches = self.spec.get("branches")
        if not isinstance(branches, list) or not branches:
            raise self.error("spec.branches", "needs at least one branch with a subscriber")
        reply = self.reply()
        parsed = []
        for i, raw in enumerate(branches):
            where = f"spec.branches[{i}]"
            self.must_be_object(raw, where)
            if raw.get("subscriber") is None:
                raise self.error(f"{where}.subscriber", "is required")
            subscriber = self.url(raw["subscriber"], f"{where}.subscriber")
            filter_url = None
            if raw.get("filter") is not None:
                filter_url = self.url(raw["filter"], f"{where}.filter")
            own_reply = None
            if raw.get("reply") is not None:
                own_reply = self.url(raw["reply"], f"{where}.reply")
            spec, dead_letter = self.delivery(raw, where)
            parsed.append(Branch(subscriber, filter_url, own_reply or reply, spec, dead_letter))
        self.channel_template()
        return Parallel(self.namespace, self.name, tuple(parsed), reply)

    def must_be_object(self, raw: Any, where: str) -> None:
        # Unknown fields were refused when the manifests were read (knfn/schema.py).
        if not isinstance(raw, Mapping):
            raise self.error(where, "must be an object")

    def url(self, raw: Any, where: str) -> str:
        try:
            dest = delivery.parse_destination(raw, where)
        except DeliveryError as exc:
            raise self.error(*_split(str(exc), where)) from None
        try:
            return destination_url(self.m, dest, self.namespace)
        except ValueError as exc:
            raise self.error(where, str(exc)) from None

    def delivery(self, raw: Mapping[str, Any], where: str) -> tuple[DeliverySpec, str | None]:
        try:
            spec = delivery.parse_delivery(raw.get("delivery"), f"{where}.delivery")
        except DeliveryError as exc:
            raise self.error(*_split(str(exc), f"{where}.delivery")) from None
        if spec is None:
            return NO_DELIVERY, None
        sink = spec.dead_letter_sink
        if sink is None:
            return spec, None
        try:
            return spec, destination_url(self.m, sink, self.namespace)
        except ValueError as exc:
            raise self.error(f"{where}.delivery.deadLetterSink", str(exc)) from None

    def reply(self) -> str | None:
        if self.spec.get("reply") is None:
            return None
        return self.url(self.spec["reply"], "spec.reply")

    def channel_template(self) -> None:
        # Defaulted to InMemoryChannel when absent; locally every channel behaves the same.
        template = self.spec.get("channelTemplate")
        if template is None:
            return
        if not isinstance(template, Mapping):
            raise self.error("spec.channelTemplate", "must be an object with apiVersion and kind")
        for key in ("apiVersion", "kind"):
            if not isinstance(template.get(key), str) or not template[key]:
                raise self.error(f"spec.channelTemplate.{key}", "is required")


def _split(message: str, default_field: str) -> tuple[str, str]:
    """("spec.reply.uri", "must be ...") from the message "spec.reply.uri: must be ..."."""
    fld, sep, problem = message.partition(": ")
    return (fld, problem) if sep and " " not in fld else (default_field, message)
