"""Triggers from the manifests, validated and resolved to a subscriber URL, a filter and a delivery.

A Trigger names its Broker (``spec.broker`` is required, as knative/eventing
pkg/apis/eventing/v1/trigger_validation.go has it; nothing defaults it). A Trigger without
``delivery`` uses its Broker's; a Broker without one uses config-br-defaults (retry 10,
exponential, PT0.2S). Every invalid Trigger stops start-up naming the file, the object and the
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
from dataclasses import dataclass

from knfn.errors import KnfnError
from knfn.eventing import delivery, destinations, filters
from knfn.eventing.delivery import DeliverySpec
from knfn.eventing.errors import DeliveryError
from knfn.manifests import Manifest, ManifestError, Manifests

# (namespace, name) of each Broker -> its spec.delivery (config-br-defaults when it has none).
BrokerDeliveries = Mapping[tuple[str, str], DeliverySpec]
# The Kafka broker's per-Trigger choice of consumer (knative/docs docs/versioned/eventing/
# brokers/broker-types/kafka-broker/README.md: "ordered" blocks per partition until the
# subscriber has answered, "unordered", the default, does not); partitionkey is the key.
DELIVERY_ORDER = "kafka.eventing.knative.dev/delivery.order"
PARTITION_KEY = "partitionkey"


@dataclass(frozen=True)
class Trigger:
    namespace: str
    name: str
    broker: str
    matches: filters.Filter
    subscriber: str
    delivery: DeliverySpec
    ordered: bool = False  # kafka.eventing.knative.dev/delivery.order: ordered
    # Resolved at load from delivery.dead_letter_sink (the Trigger's own, else its Broker's).
    dead_letter_url: str | None = None

    def order_key(self, attributes: Mapping[str, str]) -> str | None:
        """The key an ordered Trigger keeps events of in order: the ``partitionkey`` extension
        (the Kafka broker's record key). An event without one is unordered: the Kafka broker
        produces it with no key, so Kafka spreads such records over partitions with no order
        among them (cloudevents/sdk-java kafka/.../PartitionKeyExtensionInterceptor.java)."""
        return attributes.get(PARTITION_KEY) if self.ordered else None


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


class _NotReady(Exception):
    """A Trigger reference the cluster would leave unresolved (see the module docstring)."""

    def __init__(self, error: ManifestError, condition: str, reason: str) -> None:
        super().__init__(str(error))
        self.error, self.condition, self.reason = error, condition, reason


def load(
    m: Manifests, brokers: BrokerDeliveries, allow_not_ready: bool = False
) -> tuple[tuple[Trigger, ...], tuple[NotReadyTrigger, ...]]:
    """The Triggers of the manifests, and those kept as not ready (only with allow_not_ready:
    else a Trigger whose Broker, subscriber or dead-letter sink is missing stops start-up)."""
    triggers: list[Trigger] = []
    not_ready: list[NotReadyTrigger] = []
    for obj in m.of_kind("Trigger"):
        try:
            triggers.append(_trigger(m, brokers, obj))
        except _NotReady as exc:
            if not allow_not_ready:
                raise exc.error from None
            not_ready.append(
                NotReadyTrigger(
                    obj.namespace, obj.name, str(obj.spec.get("broker")), exc.condition,
                    exc.reason, f"{exc.error.field}: {exc.error.problem}",
                )
            )  # fmt: skip
    return tuple(triggers), tuple(not_ready)


def _trigger(m: Manifests, brokers: BrokerDeliveries, obj: Manifest) -> Trigger:
    ns, spec = obj.namespace, obj.spec
    # Validation first (trigger_validation.go), as the webhook refuses before anything runs;
    # then the references, which the cluster's reconciler resolves (module docstring).
    broker_name = spec.get("broker")
    if not broker_name or not isinstance(broker_name, str):
        raise obj.error(
            "spec.broker",
            "is required (Knative does not default it); name the Broker, e.g. broker: default",
        )
    try:
        matches = filters.compile_trigger(spec)
    except KnfnError as exc:
        raise obj.error("spec.filter(s)", str(exc)) from exc
    if not spec.get("subscriber"):
        raise obj.error("spec.subscriber", "is required")
    try:
        subscriber = delivery.parse_destination(spec["subscriber"], "spec.subscriber")
        own = delivery.parse_delivery(spec.get("delivery"), "spec.delivery")
    except DeliveryError as exc:
        raise exc.at(obj) from None
    broker_delivery = brokers.get((ns, broker_name))
    if broker_delivery is None:
        names = sorted(n for bns, n in brokers if bns == ns)
        close = difflib.get_close_matches(broker_name, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        error = obj.error("spec.broker", f"no Broker {ns}/{broker_name}{hint}")
        raise _NotReady(error, "BrokerReady", "BrokerDoesNotExist")
    try:
        url = destinations.resolve(m, subscriber, ns)
    except DeliveryError as exc:
        raise _NotReady(
            exc.at(obj), "SubscriberResolved", "Unable to get the Subscriber's URI"
        ) from exc
    effective = delivery.effective(own, broker_delivery)
    dead_letter_url = None
    if effective.dead_letter_sink is not None:
        try:
            dead_letter_url = destinations.resolve(m, effective.dead_letter_sink, ns)
        except DeliveryError as exc:
            raise _NotReady(
                exc.at(obj), "DeadLetterSinkResolved", "Unable to get the dead letter sink's URI"
            ) from exc
    order = str((obj.metadata.get("annotations") or {}).get(DELIVERY_ORDER, "unordered"))
    if order not in ("ordered", "unordered"):
        raise obj.error(
            f"metadata.annotations.{DELIVERY_ORDER}",
            f"{order!r} is not one of 'ordered', 'unordered'",
        )
    return Trigger(
        ns, obj.name, broker_name, matches, url, effective, order == "ordered", dead_letter_url
    )
