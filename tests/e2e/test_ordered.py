"""An ordered Trigger delivers each partitionkey in order while another key proceeds.

`knfn dev` runs as a subprocess with two dispatcher processes on a project whose one Trigger
carries ``kafka.eventing.knative.dev/delivery.order: ordered`` and sends to a test HTTP server
by ``uri``. Key ``a`` is slow: its first event is held until every event of key ``b`` has
arrived (so ``b`` must not wait behind ``a``), and one of its events fails twice before it is
taken (so the next of ``a`` must wait for the retries). Events without a partitionkey are not
held behind either key.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import eventing_project, free_port, http_server_thread, knfn_dev

BROKER = "broker-ingress.knative-eventing.svc.cluster.local"
A_EVENTS, B_EVENTS, LOOSE = 8, 20, 5
FAILING = "a-3"  # answers 500 twice, then 200
HOLD_LIMIT = 20.0  # a-0 is let go after this even if b never finished (the test then fails)
pytestmark = pytest.mark.slow

MANIFESTS = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: default}}
spec:
  delivery: {{retry: 5, backoffPolicy: linear, backoffDelay: PT0.1S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: upserts
  namespace: default
  annotations:
    kafka.eventing.knative.dev/delivery.order: ordered
spec:
  broker: default
  subscriber: {{uri: 'http://127.0.0.1:{port}/'}}
"""


class Subscriber:
    """Records every attempt (key, id, status) in arrival order and the most attempts of one
    key it ever had in flight at once."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.attempts: list[tuple[str, str, int]] = []
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_in_flight: dict[str, int] = defaultdict(int)
        self.failures: dict[str, int] = defaultdict(int)
        self.b_done = threading.Event()
        self.a0_released_early = False

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("ce-partitionkey", "")
        id_ = request.headers.get("ce-id", "")
        with self.lock:
            self.in_flight[key] += 1
            self.most_in_flight[key] = max(self.most_in_flight[key], self.in_flight[key])
        try:
            if id_ == "a-0":
                deadline = time.monotonic() + HOLD_LIMIT
                while not self.b_done.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                self.a0_released_early = not self.b_done.is_set()
            elif key == "a":
                await asyncio.sleep(0.02)  # slow enough for a successor to overtake, if allowed
            status = 200
            with self.lock:
                if id_ == FAILING and self.failures[id_] < 2:
                    self.failures[id_] += 1
                    status = 500
                self.attempts.append((key, id_, status))
                delivered_b = sum(1 for k, _, s in self.attempts if k == "b" and s == 200)
                if delivered_b >= B_EVENTS:
                    self.b_done.set()
            return web.Response(status=status)
        finally:
            with self.lock:
                self.in_flight[key] -= 1

    def delivered(self, key: str) -> list[str]:
        with self.lock:
            return [i for k, i, s in self.attempts if k == key and s == 200]


@pytest.fixture
def knfn(tmp_path: Path) -> Iterator[tuple[int, Subscriber]]:
    subscriber = Subscriber()
    project = eventing_project(tmp_path, MANIFESTS.format(port=subscriber.port))
    with (
        http_server_thread(subscriber.handle, subscriber.port),
        knfn_dev(tmp_path, extra_env={"KNFN_DISPATCHERS": "2"}, project=project) as run,
    ):
        try:
            yield run.port, subscriber
        finally:
            subscriber.b_done.set()
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(60) == 0, run.log.read_text()[-3000:]


async def post(session: aiohttp.ClientSession, port: int, id_: str, key: str | None) -> int:
    headers = {
        "Host": BROKER, "Content-Type": "application/json", "ce-specversion": "1.0",
        "ce-id": id_, "ce-source": "/tests/ordered", "ce-type": "test.upsert",
    }  # fmt: skip
    if key is not None:
        headers["ce-partitionkey"] = key
    url = f"http://127.0.0.1:{port}/default/default"
    async with session.post(url, data=b"{}", headers=headers) as resp:
        return resp.status


def test_each_key_in_order_while_another_key_proceeds(knfn: tuple[int, Subscriber]) -> None:
    """Key a's events arrive one at a time in the order they were accepted (a-4 only after a-3
    succeeded on its third attempt); every event of key b and every unkeyed event arrives while
    a-0 is still held."""
    port, subscriber = knfn

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            # Interleaved, one at a time: acceptance order is the order each key must keep.
            for n in range(max(A_EVENTS, B_EVENTS)):
                if n < A_EVENTS:
                    assert await post(session, port, f"a-{n}", "a") == 202
                if n < B_EVENTS:
                    assert await post(session, port, f"b-{n}", "b") == 202
                if n < LOOSE:
                    assert await post(session, port, f"loose-{n}", None) == 202

    asyncio.run(scenario())
    deadline = time.monotonic() + HOLD_LIMIT + 30
    while len(subscriber.delivered("a")) < A_EVENTS:
        assert time.monotonic() < deadline, subscriber.attempts
        time.sleep(0.05)

    assert not subscriber.a0_released_early, "key b waited behind key a's held event"
    assert subscriber.delivered("b") == [f"b-{n}" for n in range(B_EVENTS)]
    assert subscriber.delivered("a") == [f"a-{n}" for n in range(A_EVENTS)]
    assert sorted(subscriber.delivered("")) == sorted(f"loose-{n}" for n in range(LOOSE))
    # Unkeyed events were not held behind a-0 either.
    with subscriber.lock:
        order = [i for _, i, s in subscriber.attempts if s == 200]
    assert all(order.index(f"loose-{n}") < order.index("a-0") for n in range(LOOSE))
    # a-3's two failures were retried before a-4 was attempted at all.
    with subscriber.lock:
        a_attempts = [i for k, i, _ in subscriber.attempts if k == "a"]
    assert a_attempts[a_attempts.index(FAILING) : a_attempts.index(FAILING) + 3] == [FAILING] * 3
    assert subscriber.most_in_flight["a"] == 1
    assert subscriber.most_in_flight["b"] == 1
