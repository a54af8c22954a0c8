"""The dispatcher against a real Postgres: what a stop leaves in the broker's queue.

An attempt cut short by a stop, and a failure seen once stopping began, are released: the
delivery is pending again, due now, its attempt count as before the claim, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from pathlib import Path

import psycopg
import pytest

from knfn import manifests
from knfn.backing import services
from knfn.eventing import config as eventing_config
from knfn.eventing.dispatcher import Dispatcher
from knfn.eventing.sending import SendResult
from knfn.eventing.store import Accept, EventStore, NewDelivery

EVENTING = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
spec:
  delivery: {retry: 0, deadLetterSink: {uri: 'http://sink.invalid/dead'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: hangs, namespace: default}
spec: {broker: default, subscriber: {uri: 'http://hangs.invalid/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: fails, namespace: default}
spec: {broker: default, subscriber: {uri: 'http://fails.invalid/'}}
"""


class Subscribers:
    """hangs.invalid never answers; fails.invalid answers 500 once the stop has begun."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.reached: dict[str, asyncio.Event] = {
            "http://hangs.invalid/": asyncio.Event(),
            "http://fails.invalid/": asyncio.Event(),
        }

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> SendResult:
        self.reached[url].set()
        if url == "http://hangs.invalid/":
            await asyncio.Event().wait()
        await self.stop.wait()
        return 500, {}, b"going away", None


@pytest.fixture
def knfn_database(backing: services.BackingEnv) -> str:
    return backing.knfn_database_url


def rows(url: str, event_id: int) -> list[tuple[str, str, int, bool]]:
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1], int(r[2]), bool(r[3]))
            for r in conn.execute(
                "SELECT destination, state, attempts, leased FROM knfn_deliveries"
                " WHERE event_id = %s ORDER BY destination",
                (event_id,),
            ).fetchall()
        ]


def test_stop_releases_cut_and_failed_attempts(tmp_path: Path, knfn_database: str) -> None:
    """A hung attempt cut short and a 500 seen while stopping both end pending, attempts 0,
    lease cleared, due now; nothing is dead-lettered although retry is 0."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(EVENTING)
    config = eventing_config.load(manifests.load(base))

    async def scenario() -> int:
        store = EventStore(knfn_database)
        await store.open()
        attributes = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/t", "type": "x"}
        event_id = await store.accept(
            Accept("default", "default", attributes, b"{}", [
                NewDelivery("hangs", "http://hangs.invalid/"),
                NewDelivery("fails", "http://fails.invalid/"),
            ])
        )  # fmt: skip
        stop, cut = asyncio.Event(), asyncio.Event()
        subscribers = Subscribers(stop)
        dispatcher = Dispatcher(knfn_database, store, lambda: config, subscribers)
        running = asyncio.create_task(dispatcher.run(stop, cut))
        async with asyncio.timeout(10):
            for reached in subscribers.reached.values():
                await reached.wait()
        with psycopg.connect(knfn_database) as conn:
            claimed = conn.execute(
                "SELECT attempts, leased FROM knfn_deliveries WHERE event_id = %s", (event_id,)
            ).fetchall()
        assert claimed == [(1, True), (1, True)]
        stop.set()
        await asyncio.sleep(0.2)  # the 500 arrives; the hung attempt is still running
        assert not running.done()
        cut.set()
        await asyncio.wait_for(running, 10)
        await store.close()
        assert dispatcher.released == 2
        return event_id

    event_id = asyncio.run(scenario())
    assert rows(knfn_database, event_id) == [
        ("http://fails.invalid/", "pending", 0, False),
        ("http://hangs.invalid/", "pending", 0, False),
    ]
    with psycopg.connect(knfn_database) as conn:
        due = conn.execute(
            "SELECT bool_and(next_attempt_at <= clock_timestamp()) FROM knfn_deliveries"
            " WHERE event_id = %s",
            (event_id,),
        ).fetchone()
    assert due == (True,)
