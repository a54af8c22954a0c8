"""The eventing configuration of the manifests: Brokers, Triggers, flows, PingSources.

Each concept is read by its own module (trigger.py, flows.py, ping.py; destinations by
destinations.py); this one reads the Brokers and puts the whole together. A Broker's
``spec.delivery`` is checked here and its dead-letter sink must exist; a Broker without
``delivery`` uses config-br-defaults (retry 10, exponential, PT0.2S). Every invalid object stops
start-up naming the file, the object and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from knfn.eventing import delivery, destinations, flows, ping, trigger
from knfn.eventing.delivery import DeliverySpec
from knfn.eventing.errors import DeliveryError
from knfn.eventing.flows import Flows
from knfn.eventing.trigger import NotReadyTrigger as NotReadyTrigger
from knfn.eventing.trigger import Trigger as Trigger
from knfn.manifests import Manifests
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


def load(m: Manifests, allow_not_ready: bool = False) -> EventingConfig:
    """Brokers and Triggers of the manifests; with allow_not_ready, a Trigger whose Broker,
    subscriber or dead-letter sink is missing is kept as not ready instead of refused."""
    brokers: dict[tuple[str, str], Broker] = {}
    for obj in m.of_kind("Broker"):
        try:
            spec = delivery.parse_delivery(obj.spec.get("delivery"), "spec.delivery")
            if spec and spec.dead_letter_sink:
                destinations.resolve(m, spec.dead_letter_sink, obj.namespace)
        except DeliveryError as exc:
            raise exc.at(obj) from None
        brokers[(obj.namespace, obj.name)] = Broker(
            obj.namespace, obj.name, spec or delivery.BROKER_DEFAULT
        )
    triggers, not_ready = trigger.load(
        m, {key: b.delivery for key, b in brokers.items()}, allow_not_ready
    )
    return EventingConfig(
        brokers, triggers, flows.index(m), tuple(ping.load(m)), not_ready, allow_not_ready
    )
