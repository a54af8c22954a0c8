"""The event inspector's store against a real Postgres: every attempt recorded with its outcome,
dead letters and replays as deliveries of the same stored event."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from knfn import manifests
from knfn.backing import services
from knfn.eventing import config as eventing_config
from knfn.eventing import history, replay
from knfn.eventing.broker import fan_out
from knfn.eventing.cloudevent import Event
from knfn.eventing.dispatcher import Dispatcher
from knfn.eventing.history import EventNotFound
from knfn.eventing.replay import ReplayRefused
from knfn.eventing.sending import SendResult
from knfn.eventing.store import Accept, EventStore

EVENTING = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
spec:
  delivery: {retry: 2, backoffDelay: PT0.05S, deadLetterSink: {uri: 'http://sink.test/dead'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: ok, namespace: default}
spec: {broker: default, subscriber: {uri: 'http://ok.test/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: flaky, namespace: default}
spec: {broker: default, subscriber: {uri: 'http://flaky.test/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: broken, namespace: default}
spec: {broker: default, subscriber: {uri: 'http://broken.test/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: others, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: other}}
  subscriber: {uri: 'http://others.test/'}
"""


class Subscribers:
    """ok answers 202; flaky 500 once, then 200; broken always 500; the sink 200."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> SendResult:
        self.seen[url] += 1
        if url == "http://broken.test/" or (url == "http://flaky.test/" and self.seen[url] == 1):
            return 500, {}, b"no", None
        return 200, {}, b"", None


@pytest.fixture
def config(tmp_path: Path) -> eventing_config.EventingConfig:
    (tmp_path / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (tmp_path / "objects.yaml").write_text(EVENTING)
    return eventing_config.load(manifests.load(tmp_path))


def by_trigger(detail: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(d["trigger"], d["kind"], d["replay"]): d for d in detail["deliveries"]}


def test_attempts_dead_letters_and_replay(
    config: eventing_config.EventingConfig, backing: services.BackingEnv
) -> None:
    """Each attempt is a row with its outcome and latency; the broken Trigger's three attempts
    end in a dead letter of the same event; a replay adds deliveries numbered 1 that are
    attempted again, and the subscribers see the event twice."""
    url = backing.knfn_database_url
    subscribers = Subscribers()

    async def settled(store: EventStore, number: int, deliveries: int) -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            async with asyncio.timeout(15):
                while True:
                    detail = await history.detail(conn, number)
                    states = [d["state"] for d in detail["deliveries"]]
                    if len(states) == deliveries and "pending" not in states:
                        return detail
                    await asyncio.sleep(0.05)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        store = EventStore(url)
        await store.open()
        attributes = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/t", "type": "x"}
        event = Event(attributes, b'{"n": 1}')
        number = await store.accept(
            Accept("default", "default", attributes, event.data,
                   fan_out(config, "default", "default", event))
        )  # fmt: skip
        stop, cut = asyncio.Event(), asyncio.Event()
        dispatcher = Dispatcher(url, store, lambda: config, subscribers)
        running = asyncio.create_task(dispatcher.run(stop, cut))
        try:
            first = await settled(store, number, 4)  # ok, flaky, broken, broken's dead letter
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                stored = await history.stored(conn, number)
                with pytest.raises(ReplayRefused, match="others"):
                    replay.targets(config, stored, "others")  # its filter refuses type x
                with pytest.raises(ReplayRefused, match="not a Trigger"):
                    replay.targets(config, stored, "nope")
                with pytest.raises(EventNotFound):
                    await history.detail(conn, 2**62)
                again = replay.targets(config, stored)
                assert await history.replay(conn, number, again) == 1
                answer = replay.summary(number, 2, replay.targets(config, stored, "ok"))
                assert answer["deliveries"] == [{"trigger": "ok", "destination": "http://ok.test/"}]
                assert await history.replay(conn, number, replay.targets(config, stored, "ok")) == 2
            second = await settled(store, number, 4 + 4 + 1)
            recent = [r for r in await _recent(store, url) if r["event"] == number]
        finally:
            stop.set()
            cut.set()
            await asyncio.wait_for(running, 10)
            await store.close()
        return first, second, {"recent": recent}

    first, second, extra = asyncio.run(scenario())
    one = by_trigger(first)
    assert [a["outcome"] for a in one[("ok", "subscriber", 0)]["attempt_log"]] == ["delivered"]
    assert [(a["attempt"], a["outcome"], a["status"]) for a in
            one[("flaky", "subscriber", 0)]["attempt_log"]] == [
        (1, "pending", 500), (2, "delivered", 200)]  # fmt: skip
    broken = one[("broken", "subscriber", 0)]
    assert broken["state"] == "dead" and broken["attempts"] == 3
    assert [a["outcome"] for a in broken["attempt_log"]] == ["pending", "pending", "dead"]
    assert all(a["latency_ms"] is not None and a["latency_ms"] >= 0 for a in broken["attempt_log"])
    assert all(a["started_at"] for a in broken["attempt_log"])
    dead = one[("broken", "dead-letter", 0)]
    assert dead["state"] == "delivered" and dead["destination"] == "http://sink.test/dead"
    assert dead["extensions"]["knativeerrorcode"] == "500"
    assert first["dead_lettered"] and first["data"] == '{"n": 1}'

    two = by_trigger(second)
    assert two[("ok", "subscriber", 1)]["state"] == "delivered"
    assert two[("ok", "subscriber", 2)]["state"] == "delivered"
    assert two[("broken", "dead-letter", 1)]["state"] == "delivered"  # the replay's own
    assert ("others", "subscriber", 1) not in two
    # The subscribers saw the event again: ok three times (fan-out, replay 1, replay 2).
    assert subscribers.seen["http://ok.test/"] == 3
    assert subscribers.seen["http://sink.test/dead"] == 2
    assert {r["replay"] for r in extra["recent"]} == {0, 1, 2}


async def _recent(store: EventStore, url: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await history.recent(conn, 50)
