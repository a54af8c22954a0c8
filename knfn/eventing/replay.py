"""Replay: a stored event delivered again to its broker's Triggers.

A replay fans the stored event out again as the ingress does (:func:`broker.fan_out`, against
the Triggers and filters in force now) and adds the deliveries to the *same* stored event,
numbered as its next replay (``knfn_deliveries.replay``: 0 is the ingress's fan-out, 1 the first
replay, ...). The event itself is not copied: its attributes, id and data stay as accepted, so a
subscriber sees the very event again (a consumer that dedupes on source and id, as CloudEvents
asks, may ignore it), and the inspector shows every delivery and attempt of it in one place.
Replayed deliveries are ordinary subscriber deliveries: retried by the Trigger's delivery
policy, dead-lettered, their replies re-entering the broker.

With a Trigger named, only that Trigger is delivered to, and only if it is one of the event's
broker's Triggers and its filter passes the event: a replay never sends a Trigger what it would
not have been sent.
"""

from __future__ import annotations

from typing import Any

from knfn.errors import KnfnError
from knfn.eventing.broker import fan_out
from knfn.eventing.cloudevent import Event
from knfn.eventing.config import EventingConfig
from knfn.eventing.history import StoredEvent
from knfn.eventing.store import NewDelivery


class ReplayRefused(KnfnError):
    """The event cannot be replayed as asked (no Trigger of its broker takes it): 409."""


def targets(
    config: EventingConfig, event: StoredEvent, trigger: str | None = None
) -> list[NewDelivery]:
    """The deliveries a replay of event makes (all matching Triggers, or the one named);
    ReplayRefused naming the broker and Trigger when there are none."""
    where = f"broker {event.namespace}/{event.broker}"
    if (event.namespace, event.broker) not in config.brokers:
        raise ReplayRefused(f"{where} no longer exists: the event cannot be replayed")
    deliveries = fan_out(config, event.namespace, event.broker, Event(event.attributes, None))
    if trigger is None:
        if not deliveries:
            raise ReplayRefused(f"no Trigger of {where} passes event {event.number}")
        return deliveries
    names = {t.name for t in config.triggers_of(event.namespace, event.broker)}
    if trigger not in names:
        raise ReplayRefused(
            f"trigger {trigger!r} is not a Trigger of {where}; its Triggers: {sorted(names)}"
        )
    chosen = [d for d in deliveries if d.trigger == trigger]
    if not chosen:
        raise ReplayRefused(f"the filter of trigger {trigger!r} does not pass event {event.number}")
    return chosen


def summary(number: int, replay_number: int, deliveries: list[NewDelivery]) -> dict[str, Any]:
    """The answer to a replay: which replay it is and where it goes."""
    return {
        "event": number,
        "replay": replay_number,
        "deliveries": [{"trigger": d.trigger, "destination": d.destination} for d in deliveries],
    }
