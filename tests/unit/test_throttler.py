"""The throttler: containerConcurrency, the 10 x CC queue, holding at zero, balancing, meter."""

from __future__ import annotations

import asyncio

import pytest

from knfn.serving.throttler import ConcurrencyMeter, Overloaded, Throttler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cc_one_admits_one_queues_ten_and_refuses_the_twelfth() -> None:
    """CC 1 with one replica: 1 in flight, 10 queued, the next gets Overloaded."""

    async def body() -> None:
        t = Throttler(1)
        t.add("http://r1")
        first = await t.acquire()
        waiters = [asyncio.create_task(t.acquire()) for _ in range(10)]
        await asyncio.sleep(0)
        assert t.waiting == 10
        with pytest.raises(Overloaded):
            await t.acquire()
        t.release(first)
        second = await waiters[0]
        assert second.in_flight == 1 and t.waiting == 9
        for w in waiters[1:]:
            w.cancel()

    asyncio.run(body())


def test_request_at_zero_pokes_and_waits_for_a_replica() -> None:
    """At zero replicas a request pokes the autoscaler at once and is served once one is added."""

    async def body() -> None:
        pokes: list[int] = []
        t = Throttler(0, on_cold=lambda: pokes.append(1))
        pending = asyncio.create_task(t.acquire())
        await asyncio.sleep(0)
        assert pokes == [1] and not pending.done()
        t.add("http://r1")
        endpoint = await pending
        assert endpoint.url == "http://r1"

    asyncio.run(body())


def test_timed_out_waiter_leaves_the_queue_and_the_meter() -> None:
    """A waiter cancelled by its timeout is not counted and does not take a later slot."""

    async def body() -> None:
        t = Throttler(1)
        t.add("http://r1")
        held = await t.acquire()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await t.acquire()
        assert t.waiting == 0 and t.meter.value == 1
        t.release(held)
        assert t.endpoints[0].in_flight == 0 and t.meter.value == 0

    asyncio.run(body())


def test_round_robin_spreads_over_replicas_with_room() -> None:
    """CC above 3: requests go round the replicas in turn."""

    async def body() -> None:
        t = Throttler(10)
        for i in range(3):
            t.add(f"http://r{i}")
        got = [(await t.acquire()).url for _ in range(6)]
        assert sorted(got) == sorted(["http://r0", "http://r1", "http://r2"] * 2)

    asyncio.run(body())


def test_small_cc_fills_the_first_replica_first() -> None:
    """CC up to 3: the first replica with room takes the request."""

    async def body() -> None:
        t = Throttler(2)
        t.add("http://a")
        t.add("http://b")
        got = [(await t.acquire()).url for _ in range(4)]
        assert got == ["http://a", "http://a", "http://b", "http://b"]

    asyncio.run(body())


def test_removed_replica_gets_no_new_requests() -> None:
    """A draining replica keeps its in-flight request but is not picked again."""

    async def body() -> None:
        t = Throttler(0)
        a = t.add("http://a")
        held = await t.acquire()
        t.remove(a)
        t.add("http://b")
        assert (await t.acquire()).url == "http://b"
        t.release(held)
        assert a.in_flight == 0

    asyncio.run(body())


def test_meter_averages_over_time() -> None:
    """Two requests for half of a one-second window average one; the count is two."""
    clock = Clock()
    meter = ConcurrencyMeter(clock)
    meter.enter()
    meter.enter()
    clock.now = 0.5
    meter.leave()
    meter.leave()
    clock.now = 1.0
    assert meter.take() == (1.0, 2)
    clock.now = 2.0
    assert meter.take() == (0.0, 0)
