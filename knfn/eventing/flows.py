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
  event was handed on (here: stored), or an error when that failed (here: 503).
* Names (``resources/channel.go``, ``resources/subscription.go``): channels
  ``<name>-kn-sequence-<i>``, ``<name>-kn-parallel``, ``<name>-kn-parallel-<i>``;
  subscriptions ``<name>-kn-sequence-<i>``, ``<name>-kn-parallel-filter-<i>`` and
  ``<name>-kn-parallel-<i>``. A hop's delivery carries its subscription's name as its
  ``trigger``, so the event inspector and ``knfn events`` name what upstream would.

Design: every hop is a queued delivery. The flow's address stores the event with its first
hop(s) (step 0; each Parallel branch's filter, or its subscriber when it has none) in the event
store (``store.py``) and answers 202 once that is committed, as the broker ingress does and as
a durable channel (KafkaChannel) does, rather than as the default InMemoryChannel, which runs
the chain inside the request and loses it on a restart. The broker's dispatchers claim a hop
like any delivery and hand it to ``subscription.py``, which attempts it under its subscription's
``delivery`` (retry, backoff, timeout, dead-letter sink) and turns a reply into the next hop:
stored as a new event (on the next channel) with its delivery, in the same transaction as the
outcome of the hop that answered. A crash between the two loses nothing; it may repeat a hop
(at least once). The address itself, and the hop limit that stops a flow feeding itself, are
in ``channel.py``.

As with a durable channel, a hop that finally fails ends its own chain only: step *i* is done
once its reply is stored, and step *i+1* is retried and dead-lettered under its own policy.
Upstream's synchronous InMemoryChannel would instead answer 500 to step *i*'s subscription,
which then re-runs step *i* under its own retry policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from knfn.eventing import delivery, destinations
from knfn.eventing.delivery import DeliveryError, DeliverySpec
from knfn.manifests import Manifest, ManifestError, Manifests

FLOWS_GROUP = "flows.knative.dev"
CHANNEL_SUFFIX = "-kn-channel"  # pkg/channel/references.go K8ServiceNameSuffix
NO_DELIVERY = DeliverySpec()  # a subscription without spec.delivery: one attempt, no sink


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


# -- the flows and their hops ----------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One destination of a flow, as the subscription that sends there delivers to it.

    ``ref`` names it within its flow: ``steps[i]``, ``reply`` (a Sequence's), and
    ``branches[i].filter``, ``branches[i].subscriber``, ``branches[i].reply``. ``kind`` is
    step, filter, branch or reply (no ``Prefer: reply`` to a reply destination, and what it
    answers goes nowhere). ``channel`` is the channel an event for this hop arrives on;
    ``then`` is the ref of the hop a reply event goes on to (None: a reply is dropped).
    """

    ref: str
    kind: str
    subscription: str
    channel: str
    url: str
    delivery: DeliverySpec = NO_DELIVERY
    dead_letter_url: str | None = None
    then: str | None = None


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

    @cached_property
    def hops(self) -> dict[str, Hop]:
        """Step *i* (subscription and channel ``<name>-kn-sequence-<i>``) replies to step
        *i+1*; the last step to ``reply``, sent by the last step's subscription."""
        out: dict[str, Hop] = {}
        last = len(self.steps) - 1
        for i, step in enumerate(self.steps):
            name = child_name(self.name, f"-kn-sequence-{i}")
            then = f"steps[{i + 1}]" if i < last else ("reply" if self.reply_url else None)
            out[f"steps[{i}]"] = Hop(
                f"steps[{i}]", "step", name, name, step.url, step.delivery,
                step.dead_letter_url, then,
            )  # fmt: skip
            if i == last and self.reply_url is not None:
                out["reply"] = Hop(
                    "reply", "reply", name, name, self.reply_url, step.delivery,
                    step.dead_letter_url,
                )  # fmt: skip
        return out

    @property
    def first(self) -> tuple[Hop, ...]:
        """Where an event at the address goes: step 0."""
        return (self.hops["steps[0]"],) if self.steps else ()


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

    @cached_property
    def hops(self) -> dict[str, Hop]:
        """Per branch: the filter (subscription ``<name>-kn-parallel-filter-<i>`` on the
        ingress channel, no delivery: parallel/resources/subscription.go NewFilterSubscription)
        replies to the subscriber (subscription and channel ``<name>-kn-parallel-<i>``), which
        replies to the branch's reply destination."""
        out: dict[str, Hop] = {}
        ingress = child_name(self.name, "-kn-parallel")
        for i, b in enumerate(self.branches):
            where, sub = f"branches[{i}]", child_name(self.name, f"-kn-parallel-{i}")
            if b.filter_url is not None:
                out[f"{where}.filter"] = Hop(
                    f"{where}.filter", "filter", child_name(self.name, f"-kn-parallel-filter-{i}"),
                    ingress, b.filter_url, then=f"{where}.subscriber",
                )  # fmt: skip
            out[f"{where}.subscriber"] = Hop(
                f"{where}.subscriber", "branch", sub, sub, b.subscriber_url, b.delivery,
                b.dead_letter_url, f"{where}.reply" if b.reply_url else None,
            )  # fmt: skip
            if b.reply_url is not None:
                out[f"{where}.reply"] = Hop(
                    f"{where}.reply", "reply", sub, sub, b.reply_url, b.delivery,
                    b.dead_letter_url,
                )  # fmt: skip
        return out

    @property
    def first(self) -> tuple[Hop, ...]:
        """Where an event at the address goes: each branch's filter, or, for a branch without
        one, straight to its subscriber (the filter subscription then has no subscriber)."""
        hops = self.hops
        return tuple(
            hops.get(f"branches[{i}].filter") or hops[f"branches[{i}].subscriber"]
            for i in range(len(self.branches))
        )


Flow = Sequence | Parallel


@dataclass(frozen=True)
class Flows:
    """The flows of the manifests, found by the host of their address or by name."""

    sequences: tuple[Sequence, ...] = ()
    parallels: tuple[Parallel, ...] = ()

    def all(self) -> tuple[Flow, ...]:
        return (*self.sequences, *self.parallels)

    def find(self, namespace: str, service: str) -> Flow | None:
        """The flow whose address is ``<service>.<namespace>`` (as routing.parse_host splits)."""
        wanted = f"{service}.{namespace}.svc.cluster.local"
        return next((f for f in self.all() if f.host == wanted), None)

    def get(self, kind: str, namespace: str, name: str) -> Flow | None:
        """The Sequence or Parallel of that name."""
        return next(
            (
                f
                for f in self.all()
                if (type(f).__name__, f.namespace, f.name) == (kind, namespace, name)
            ),
            None,
        )


# -- the manifests ---------------------------------------------------------------------------


def load(m: Manifests) -> tuple[list[Sequence], list[Parallel]]:
    """The Sequences and Parallels of the manifests; ManifestError names file, object, field."""
    sequences = [_Loader(m, obj).sequence() for obj in m.of_kind("Sequence")]
    parallels = [_Loader(m, obj).parallel() for obj in m.of_kind("Parallel")]
    return sequences, parallels


def index(m: Manifests) -> Flows:
    """:func:`load`, as the lookup the gateway needs."""
    sequences, parallels = load(m)
    return Flows(tuple(sequences), tuple(parallels))


class _Loader:
    """Validates one Sequence or Parallel (flows/v1 sequence_validation.go and
    parallel_validation.go, plus unknown fields, which the API server refuses)."""

    def __init__(self, m: Manifests, obj: Manifest) -> None:
        self.m, self.obj = m, obj
        self.name, self.namespace, self.spec = obj.name, obj.namespace, obj.spec
        if not isinstance(self.spec, Mapping):
            raise self.error("spec", "must be an object")

    def error(self, fld: str, problem: str) -> ManifestError:
        return self.obj.error(fld, problem)

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
            return destinations.resolve(self.m, dest, self.namespace)
        except DeliveryError as exc:
            raise exc.at(self.obj) from None

    def delivery(self, raw: Mapping[str, Any], where: str) -> tuple[DeliverySpec, str | None]:
        try:
            spec = delivery.parse_delivery(raw.get("delivery"), f"{where}.delivery")
            if spec is None:
                return NO_DELIVERY, None
            sink = spec.dead_letter_sink
            return spec, None if sink is None else destinations.resolve(
                self.m, sink, self.namespace
            )
        except DeliveryError as exc:
            raise exc.at(self.obj) from None

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
