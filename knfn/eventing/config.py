"""Brokers and Triggers from the manifests, validated and resolved to URLs and filters.

A Trigger names its Broker (``spec.broker`` is required, as knative/eventing
pkg/apis/eventing/v1/trigger_validation.go has it; nothing defaults it). A Trigger without
``delivery`` uses its Broker's; a Broker without one uses config-br-defaults (retry 10,
exponential, PT0.2S). Every invalid object stops start-up naming the file, the object and the
field.

A Trigger whose Broker, subscriber or dead-letter sink is not in the manifests is valid to
Knative's webhook: the cluster accepts it and its reconciler marks it not ready
(pkg/reconciler/broker/trigger/trigger.go: BrokerReady False ``BrokerDoesNotExist``,
SubscriberResolved or DeadLetterSinkResolved False), and it gets no events. By default knfn
stops start-up on it instead, since it is nearly always a typo; with ``allow_not_ready``
(``knfn dev --allow-not-ready-triggers``) it starts, like the cluster, and lists the Trigger
under ``not_ready_triggers`` in /status with the condition, reason and message.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from knfn.errors import KnfnError
from knfn.eventing import delivery, filters, flows, ping
from knfn.eventing.delivery import DeliverySpec
from knfn.eventing.flows import Flows
from knfn.manifests import ManifestError, Manifests
from knfn.routing import BROKER_INGRESS


@dataclass(frozen=True)
class Broker:
    namespace: str
    name: str
    delivery: DeliverySpec

    @property
    def address(self) -> str:
        return f"{BROKER_INGRESS}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Trigger:
    namespace: str
    name: str
    broker: str
    matches: filters.Filter
    subscriber: str
    delivery: DeliverySpec

    @property
    def dead_letter_url(self) -> str | None:
        sink = self.delivery.dead_letter_sink
        return sink.url(self.namespace) if sink else None


@dataclass(frozen=True)
class NotReadyTrigger:
    """A Trigger the cluster would accept and mark Ready=False: it gets no events."""

    namespace: str
    name: str
    broker: str
    condition: str  # BrokerReady | SubscriberResolved | DeadLetterSinkResolved
    reason: str  # as the upstream reconciler words it
    message: str

    def status(self) -> dict[str, str | bool]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "broker": self.broker,
            "ready": False,
            "condition": self.condition,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class EventingConfig:
    brokers: Mapping[tuple[str, str], Broker]
    triggers: tuple[Trigger, ...]
    flows: Flows = field(default_factory=Flows)
    pings: tuple[ping.PingSource, ...] = ()
    not_ready: tuple[NotReadyTrigger, ...] = ()
    allow_not_ready: bool = False  # kept, so that a reload loads the same way

    def triggers_of(self, namespace: str, broker: str) -> list[Trigger]:
        return [t for t in self.triggers if (t.namespace, t.broker) == (namespace, broker)]

    def trigger(self, namespace: str, name: str) -> Trigger | None:
        return self._by_name.get((namespace, name))

    @cached_property
    def _by_name(self) -> dict[tuple[str, str], Trigger]:
        return {(t.namespace, t.name): t for t in self.triggers}


def _check_ref(
    m: Manifests, path: Path, label: str, fld: str, dest: delivery.Destination, ns: str
) -> str:
    """The destination's URL; a Service, Broker or flow it names must exist in the manifests."""
    try:
        return flows.destination_url(m, dest, ns)
    except ValueError as exc:
        raise ManifestError(path, label, fld, str(exc)) from exc


class _NotReady(Exception):
    """A Trigger reference the cluster would leave unresolved (see the module docstring)."""

    def __init__(self, error: ManifestError, condition: str, reason: str) -> None:
        super().__init__(str(error))
        self.error, self.condition, self.reason = error, condition, reason


def load(m: Manifests, allow_not_ready: bool = False) -> EventingConfig:
    """Brokers and Triggers of the manifests; with allow_not_ready, a Trigger whose Broker,
    subscriber or dead-letter sink is missing is kept as not ready instead of refused."""
    brokers: dict[tuple[str, str], Broker] = {}
    raw_triggers: list[tuple[Path, Mapping[str, Any]]] = []
    for path, doc in m.others:
        meta = doc.get("metadata") or {}
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        if doc.get("kind") == "Broker":
            label = f"Broker {name}"
            try:
                spec = delivery.parse_delivery(
                    (doc.get("spec") or {}).get("delivery"), "spec.delivery"
                )
            except KnfnError as exc:
                raise ManifestError(path, label, "spec.delivery", str(exc)) from exc
            if spec and spec.dead_letter_sink:
                _check_ref(
                    m, path, label, "spec.delivery.deadLetterSink", spec.dead_letter_sink, ns
                )
            brokers[(ns, name)] = Broker(ns, name, spec or delivery.BROKER_DEFAULT)
        elif doc.get("kind") == "Trigger":
            raw_triggers.append((path, doc))
    triggers: list[Trigger] = []
    not_ready: list[NotReadyTrigger] = []
    for path, doc in raw_triggers:
        try:
            triggers.append(_trigger(m, brokers, path, doc))
        except _NotReady as exc:
            if not allow_not_ready:
                raise exc.error from None
            tmeta, tspec = doc.get("metadata") or {}, doc.get("spec") or {}
            not_ready.append(
                NotReadyTrigger(
                    str(tmeta.get("namespace") or "default"), str(tmeta.get("name")),
                    str(tspec.get("broker")), exc.condition, exc.reason,
                    f"{exc.error.field}: {exc.error.problem}",
                )
            )  # fmt: skip
    return EventingConfig(
        brokers, tuple(triggers), flows.index(m), tuple(ping.load(m)), tuple(not_ready),
        allow_not_ready,
    )  # fmt: skip


def _trigger(
    m: Manifests,
    brokers: Mapping[tuple[str, str], Broker],
    path: Path,
    doc: Mapping[str, Any],
) -> Trigger:
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    label = f"Trigger {name}"
    # Validation first (trigger_validation.go), as the webhook refuses before anything runs;
    # then the references, which the cluster's reconciler resolves (module docstring).
    broker_name = spec.get("broker")
    if not broker_name or not isinstance(broker_name, str):
        raise ManifestError(
            path, label, "spec.broker",
            "is required (Knative does not default it); name the Broker, e.g. broker: default",
        )  # fmt: skip
    try:
        matches = filters.compile_trigger(spec)
    except KnfnError as exc:
        raise ManifestError(path, label, "spec.filter(s)", str(exc)) from exc
    if not spec.get("subscriber"):
        raise ManifestError(path, label, "spec.subscriber", "is required")
    try:
        subscriber = delivery.parse_destination(spec["subscriber"], "spec.subscriber")
        own = delivery.parse_delivery(spec.get("delivery"), "spec.delivery")
    except KnfnError as exc:
        raise ManifestError(path, label, "spec", str(exc)) from exc
    broker = brokers.get((ns, broker_name))
    if broker is None:
        names = sorted(n for bns, n in brokers if bns == ns)
        close = difflib.get_close_matches(broker_name, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        error = ManifestError(path, label, "spec.broker", f"no Broker {ns}/{broker_name}{hint}")
        raise _NotReady(error, "BrokerReady", "BrokerDoesNotExist")
    try:
        url = _check_ref(m, path, label, "spec.subscriber", subscriber, ns)
    except ManifestError as exc:
        raise _NotReady(exc, "SubscriberResolved", "Unable to get the Subscriber's URI") from exc
    effective = delivery.effective(own, broker.delivery)
    if own and own.dead_letter_sink:
        try:
            _check_ref(m, path, label, "spec.delivery.deadLetterSink", own.dead_letter_sink, ns)
        except ManifestError as exc:
            raise _NotReady(
                exc, "DeadLetterSinkResolved", "Unable to get the dead letter sink's URI"
            ) from exc
    return Trigger(ns, name, broker_name, matches, url, effective)
