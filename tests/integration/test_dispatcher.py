"""The dispatcher against a real Postgres: what a stop leaves in the broker's queue, and claims
of ordered deliveries by two claimers at once (as two dispatcher processes make them).

An attempt cut short by a stop, and a failure seen once stopping began, are released: the
delivery is pending again, due now, its attempt count as before the claim, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from knfn import manifests
from knfn.backing import services
from knfn.eventing import config as eventing_config
from knfn.eventing.dispatcher import Dispatcher
from knfn.eventing.sending import SendResult
from knfn.eventing.store import Accept, EventStore, NewDelivery, Outcome

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
def knfn_database(backing: services.BackingEnv) -> Iterator[str]:
    """A database of the test's own: a dispatcher claims every due delivery it finds, so one
    shared with other tests would hand it their leftovers (and count them as released)."""
    name = f"dispatch_{uuid.uuid4().hex[:12]}"
    admin_url = backing.knfn_database_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


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


class SlowReleases(EventStore):
    """Writes releases only after a while: the last write is still under way when the
    attempts have all ended (the stop's flush must wait for it, not cancel it)."""

    async def release(self, conn: psycopg.AsyncConnection[Any], ids: Sequence[int]) -> None:
        await asyncio.sleep(0.3)
        await super().release(conn, ids)


@pytest.mark.parametrize("store_class", [EventStore, SlowReleases])
def test_stop_releases_cut_and_failed_attempts(
    tmp_path: Path, knfn_database: str, store_class: type[EventStore]
) -> None:
    """A hung attempt cut short and a 500 seen while stopping both end pending, attempts 0,
    lease cleared, due now, both counted as released; nothing is dead-lettered although
    retry is 0. With slow release writes too: a write under way is finished, not cut off."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(EVENTING)
    config = eventing_config.load(manifests.load(base))

    async def scenario() -> int:
        store = store_class(knfn_database)
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


def test_ordered_claims_give_one_delivery_per_key_at_a_time_across_claimers(
    knfn_database: str,
) -> None:
    """Two claimers on their own connections, claiming at once: of an ordered Trigger's key
    only the earliest pending delivery is ever claimable; the next once it has ended (a retry
    pending holds it back, delivered lets it go); other keys and unordered deliveries are
    claimed beside it."""
    trigger = f"ordered-{uuid.uuid4().hex[:8]}"
    lease = timedelta(seconds=60)

    def accept(key: str | None, n: int) -> Accept:
        attributes = {"specversion": "1.0", "id": f"{key}-{n}", "source": "/t", "type": "x"}
        delivery = NewDelivery(trigger, f"http://{trigger}.invalid/", order_key=key)
        return Accept("default", "default", attributes, b"{}", [delivery])

    async def scenario() -> list[list[str]]:
        store = EventStore(knfn_database)
        await store.open()
        for n in range(3):
            for key in ("a", "b", None):
                await store.accept(accept(key, n))
        rounds: list[list[str]] = []
        async with (
            await psycopg.AsyncConnection.connect(knfn_database, autocommit=True) as one,
            await psycopg.AsyncConnection.connect(knfn_database, autocommit=True) as two,
        ):

            async def claim_round() -> list[int]:
                got = await asyncio.gather(
                    store.claim(one, 100, lease), store.claim(two, 100, lease)
                )
                mine = [c for batch in got for c in batch if c.trigger == trigger]
                rounds.append(sorted(c.attributes["id"] for c in mine))
                return [c.id for c in mine]

            async def end(ids: Sequence[int], state: str) -> None:
                retry_at = datetime.now(UTC) if state == "pending" else None
                await store.record(
                    one, [Outcome(i, state, 200, None, retry_at=retry_at) for i in ids], wake=True
                )

            first = await claim_round()  # a-0, b-0 and every unordered one
            await end(first, "pending")  # all retried: still pending, due now
            second = await claim_round()  # the same again: a-1 and b-1 stay behind
            await end(second, "delivered")
            third = await claim_round()  # a-1, b-1
            await end(third, "delivered")
            await claim_round()  # a-2, b-2
        await store.close()
        return rounds

    rounds = asyncio.run(scenario())
    loose = ["None-0", "None-1", "None-2"]
    assert rounds == [
        sorted(["a-0", "b-0", *loose]),
        sorted(["a-0", "b-0", *loose]),
        ["a-1", "b-1"],
        ["a-2", "b-2"],
    ]
