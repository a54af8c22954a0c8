"""One Trigger's subscriber hangs; another Trigger's deliveries keep arriving at once.

`knfn dev` runs as a subprocess on a project whose two Triggers send to a test HTTP server by
``uri``: ``/hang`` holds every request until the test lets go, ``/fast`` answers at once. More
events go to the hung subscriber than its per-subscriber bound, then events for the other
Trigger are posted one by one and the time from 202 to arrival is measured.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import eventing_project, free_port, http_server_thread, knfn_dev

BROKER = "broker-ingress.knative-eventing.svc.cluster.local"
HUNG = 100  # more than a subscriber's bound of attempts in flight
FAST = 40
pytestmark = pytest.mark.slow


class Subscribers:
    def __init__(self) -> None:
        self.port = free_port()
        self.release = threading.Event()
        self.hung = 0
        self.arrived: dict[str, float] = {}

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.path == "/hang":
            self.hung += 1
            while not self.release.is_set():
                await asyncio.sleep(0.05)
        else:
            self.arrived[request.headers.get("ce-id", "")] = time.monotonic()
        return web.Response(status=200)


def manifests(url: str) -> str:
    def trigger(name: str, path: str) -> str:
        return (
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  broker: default\n  filter: {{attributes: {{type: test.{name}}}}}\n"
            f"  subscriber: {{uri: '{url}/{path}'}}\n"
        )

    broker = (
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\n"
        "metadata: {name: default, namespace: default}\nspec: {}\n"
    )
    return "---\n".join([broker, trigger("hung", "hang"), trigger("fast", "fast")])


@pytest.fixture
def knfn(tmp_path: Path) -> Iterator[tuple[int, Subscribers]]:
    subscribers = Subscribers()
    project = eventing_project(tmp_path, manifests(f"http://127.0.0.1:{subscribers.port}"))
    with (
        http_server_thread(subscribers.handle, subscribers.port),
        knfn_dev(tmp_path, project=project) as run,
    ):
        try:
            yield run.port, subscribers
        finally:
            subscribers.release.set()
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(60) == 0, run.log.read_text()[-3000:]


async def post(session: aiohttp.ClientSession, port: int, type_: str, id_: str) -> int:
    headers = {
        "Host": BROKER, "Content-Type": "application/json", "ce-specversion": "1.0",
        "ce-id": id_, "ce-source": "/tests/isolation", "ce-type": type_,
    }  # fmt: skip
    url = f"http://127.0.0.1:{port}/default/default"
    async with session.post(url, data=b"{}", headers=headers) as resp:
        return resp.status


def test_a_hung_subscriber_does_not_delay_another_trigger(
    knfn: tuple[int, Subscribers],
) -> None:
    """With 100 deliveries held by a subscriber that never answers, each event for another
    Trigger arrives within a few tens of ms of its 202 (p50 well under 500 ms)."""
    port, subscribers = knfn

    async def scenario() -> list[float]:
        async with aiohttp.ClientSession() as session:
            statuses = await asyncio.gather(
                *(post(session, port, "test.hung", f"hung-{n}") for n in range(HUNG))
            )
            assert set(statuses) == {202}
            deadline = time.monotonic() + 10
            while subscribers.hung == 0:
                assert time.monotonic() < deadline, "the hung subscriber was never reached"
                await asyncio.sleep(0.05)
            latencies = []
            for n in range(FAST):
                id_ = f"fast-{n}"
                assert await post(session, port, "test.fast", id_) == 202
                accepted = time.monotonic()
                while id_ not in subscribers.arrived:
                    assert time.monotonic() - accepted < 10, f"{id_} did not arrive in 10 s"
                    await asyncio.sleep(0.002)
                latencies.append(subscribers.arrived[id_] - accepted)
            return latencies

    latencies = asyncio.run(scenario())
    assert not subscribers.release.is_set()
    p50, worst = statistics.median(latencies), max(latencies)
    print(
        f"\nwith {subscribers.hung} attempts held by a hung subscriber: other trigger's"
        f" delivery p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms over {FAST} events"
    )
    assert subscribers.hung < HUNG  # bounded: the hung subscriber does not get every slot
    assert p50 < 0.5, latencies
