"""The activator in the path: the excess burst capacity, the mode Knative picks from it, the
activator's queue in front of the replicas, a revision in the fake world switching, and the
band a load run's plot draws for it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from knfn.load import plot
from knfn.load.series import RevisionSample, Row, activator_spans, revision_sample
from knfn.load.stats import Timeline
from knfn.serving.activator import (
    PROXY,
    SERVE,
    Activator,
    Overloaded,
    excess_burst_capacity,
    serve_mode,
)
from knfn.serving.throttler import Endpoint, Throttler
from tests.unit.fakes import AT_ZERO, World, service, settle, world


@pytest.mark.parametrize(
    ("ready", "capacity", "tbc", "panic", "ebc"),
    [
        (1, 1.0, 211.0, 0.0, -210),  # CC 1: one replica is far below the default burst
        (3, 100.0, 211.0, 50.0, 39),  # 300 - 211 - 50
        (3, 100.0, 211.0, 88.5, 0),  # floored: 0.5 spare is none
        (3, 100.0, 211.0, 90.5, -2),  # floored down below zero
        (0, 100.0, 211.0, 0.0, -211),  # no replica counts as none, not as one
        (5, 100.0, 0.0, 400.0, 0),  # target-burst-capacity 0: never negative
        (5, 100.0, -1.0, 0.0, -1),  # -1: unlimited, always negative
    ],
)
def test_excess_burst_capacity(
    ready: int, capacity: float, tbc: float, panic: float, ebc: int
) -> None:
    """autoscaler.go: floor(ready x capacity - target-burst-capacity - panic load); 0 and -1."""
    assert excess_burst_capacity(ready, capacity, tbc, panic) == ebc


@pytest.mark.parametrize(
    ("requested", "ebc", "serve"),
    [
        (3, 100, True),  # enough spare capacity: serve mode
        (3, 0, True),  # target-burst-capacity 0: out of the path once scaled
        (3, -5, False),  # not enough spare capacity for the burst: proxy mode
        (3, -1, False),  # target-burst-capacity -1: always in the path
        (0, 100, False),  # scaled to zero: the activator holds the requests
    ],
)
def test_serve_mode_as_the_kpa_reconciler_picks_it(requested: int, ebc: int, serve: bool) -> None:
    """kpa.go: serve only when the wanted scale is above zero and the EBC is not negative."""
    assert serve_mode(requested, ebc) is serve


def test_activator_is_in_the_path_in_proxy_mode_and_always_at_zero() -> None:
    """Serve mode with no ready replica still goes through the activator (serverlessservice.go)."""
    activator = Activator()
    activator.follow(2, 10)
    assert activator.mode == SERVE
    assert activator.in_path(1) is False and activator.in_path(0) is True
    activator.follow(2, -10)
    assert activator.mode == PROXY and activator.in_path(3) is True


def test_activator_queue_refuses_past_its_depth() -> None:
    """The activator holds up to its depth; the next request is refused; a freed place is reused."""
    activator = Activator(PROXY, depth=2)
    activator.hold()
    activator.hold()
    with pytest.raises(Overloaded, match="activator queue full"):
        activator.hold()
    activator.forwarded()
    activator.hold()
    assert activator.held == 2


# ---- in front of the replicas (the throttler) --------------------------------------------------


async def burst(t: Throttler, n: int) -> tuple[Counter[str], int]:
    """n requests at once, each holding its slot for a turn of the loop; the outcomes and the
    most requests a replica ever had in flight."""
    peak = 0

    async def one() -> str:
        nonlocal peak
        try:
            endpoint = await t.acquire()
        except Overloaded:
            return "503"
        peak = max(peak, *(e.in_flight for e in t.endpoints))
        await asyncio.sleep(0)
        t.release(endpoint)
        return "200"

    outcomes = await asyncio.gather(*(one() for _ in range(n)))
    return Counter(outcomes), peak


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (PROXY, Counter({"200": 14})),  # the activator holds them all
        (SERVE, Counter({"200": 11, "503": 3})),  # 1 in flight + 10 x CC queued at the replica
    ],
)
def test_cc_one_one_replica_fourteen_at_once(mode: str, expected: Counter[str]) -> None:
    """CC 1, one replica, 14 at once: no 503 through the activator; 3 straight to the replica."""

    async def body() -> None:
        t = Throttler(1, activator=Activator(mode))
        t.add("http://r1")
        outcomes, peak = await burst(t, 14)
        assert outcomes == expected
        assert peak == 1  # containerConcurrency is never exceeded either way
        assert t.waiting == 0 and t.meter.value == 0

    asyncio.run(body())


def test_held_requests_are_dispatched_first_come_first_served_by_cc() -> None:
    """Two replicas of CC 2 and 10 held requests: 4 go at once, the rest as slots free, in order."""

    async def body() -> None:
        t = Throttler(2, activator=Activator(PROXY))
        for url in ("http://r1", "http://r2"):
            t.add(url)
        tasks = [asyncio.create_task(t.acquire()) for _ in range(10)]
        await settle()
        assert [task.done() for task in tasks] == [True] * 4 + [False] * 6
        assert t.activator.held == 6 and t.queued == 0
        assert sorted(e.in_flight for e in t.endpoints) == [2, 2]
        first: Endpoint = tasks[0].result()
        t.release(first)
        await settle()
        assert tasks[4].done() and tasks[4].result() is first and not tasks[5].done()
        for task in tasks[5:]:
            task.cancel()
        await settle()
        assert t.activator.held == 0 and t.waiting == 0

    asyncio.run(body())


def test_leaving_the_path_keeps_held_requests_and_queues_new_ones_at_the_replica() -> None:
    """Switched to serve mode, the 20 requests the activator holds stay held (no 503), while new
    ones queue at the replica up to 10 x CC, and the one after that is refused."""

    async def body() -> None:
        activator = Activator(PROXY)
        t = Throttler(1, activator=activator)
        t.add("http://r1")
        busy = await t.acquire()
        held = [asyncio.create_task(t.acquire()) for _ in range(20)]
        await settle()
        assert activator.held == 20
        activator.follow(1, 0)  # the KPA's next tick: EBC no longer negative
        queued = [asyncio.create_task(t.acquire()) for _ in range(10)]
        await settle()
        assert t.queued == 10 and activator.held == 20
        with pytest.raises(Overloaded, match="pending request queue full"):
            await t.acquire()
        t.release(busy)
        await settle()
        assert held[0].done() and t.waiting == 29  # first come, first served
        for task in held + queued:
            task.cancel()
        await settle()
        assert t.waiting == 0

    asyncio.run(body())


# ---- a revision in the fake world ------------------------------------------------------------


CC1_MAX1 = {"autoscaling.knative.dev/max-scale": "1"}


def run(tmp_path: Path, scenario: object) -> None:
    w = world(tmp_path, ready_at_once=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(w.serving.run(2.0, stop))
        try:
            await scenario(w)  # type: ignore[operator]
        finally:
            stop.set()
            await asyncio.wait_for(loop, 1)
            await w.serving.stop(grace=0)

    asyncio.run(main())


def revision(w: World, name: str) -> dict[str, object]:
    [rev] = [r for s in w.serving.status()["services"] if s["name"] == name for r in s["revisions"]]
    return rev


@pytest.mark.parametrize(
    ("annotations", "in_path", "refused"),
    [
        ({}, True, 0),  # default target-burst-capacity 211: EBC 1 - 211 < 0
        ({"autoscaling.knative.dev/target-burst-capacity": "0"}, False, 3),
        ({"autoscaling.knative.dev/target-burst-capacity": "-1"}, True, 0),
    ],
)
def test_revision_with_a_ready_replica_follows_its_kpa(
    tmp_path: Path, annotations: dict[str, str], in_path: bool, refused: int
) -> None:
    """CC 1, max-scale 1, one replica ready: the mode /status and /metrics report is the one the
    14 requests meet."""

    async def scenario(w: World) -> None:
        await w.apply(service("burst", cc=1, annotations=CC1_MAX1 | annotations))
        await w.clock.advance(2)  # a tick with the replica ready
        rt = w.serving.services[("default", "burst")].latest
        auto = revision(w, "burst")["autoscaler"]
        assert isinstance(auto, dict)
        assert auto["ready_pods"] == 1 and auto["activator_in_path"] is in_path
        [row] = list(w.serving.autoscaling())
        assert row.autoscaler["activator_in_path"] is in_path
        outcomes, _ = await burst(rt.throttler, 14)
        assert outcomes["503"] == refused and outcomes.total() == 14

    run(tmp_path, scenario)


def test_target_burst_capacity_zero_keeps_the_activator_only_at_zero(tmp_path: Path) -> None:
    """TBC 0 at zero: the request is held by the activator (not refused) until a replica is
    ready; then the activator leaves the path."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = False
        tbc0 = {"autoscaling.knative.dev/target-burst-capacity": "0"}
        await w.apply(service("zero", cc=1, annotations=AT_ZERO | CC1_MAX1 | tbc0))
        rt = w.serving.services[("default", "zero")].latest
        auto = revision(w, "zero")["autoscaler"]
        assert isinstance(auto, dict) and auto["activator_in_path"] is True
        request = asyncio.create_task(rt.throttler.acquire())
        await settle()
        assert rt.activator.held == 1 and rt.throttler.queued == 0
        w.replicas.made[0].become_ready()
        rt.throttler.release(await asyncio.wait_for(request, 1))
        await w.clock.advance(2)
        auto = revision(w, "zero")["autoscaler"]
        assert isinstance(auto, dict)
        assert auto["ready_pods"] == 1 and auto["activator_in_path"] is False

    run(tmp_path, scenario)


# ---- the plot of a load run -------------------------------------------------------------------


def test_activator_spans_and_band_in_the_plot(tmp_path: Path) -> None:
    """/status's activator_in_path becomes spans (as panics do) and a band in the PNG."""
    timeline = Timeline()
    seen = [None, True, True, False, False, True]
    rows = [
        Row(timeline.second(t), 0, (RevisionSample("hello-00001", 1, 1, activator=a),))
        for t, a in enumerate(seen)
    ]
    assert activator_spans(rows, "hello-00001") == [(0.5, 2.5), (4.5, 5.5)]
    sample = revision_sample({"name": "r", "autoscaler": {"activator_in_path": False}})
    assert sample.activator is False and revision_sample({"name": "r"}).activator is None

    def pixels(rows: list[Row], name: str) -> bytes:
        path = plot.draw(rows, "GET hello.default/", 5.0, tmp_path / name)
        with Image.open(path) as image:
            return image.convert("RGB").tobytes()

    plain = [Row(r.second, 0, (RevisionSample("hello-00001", 1, 1),)) for r in rows]
    assert pixels(rows, "band.png") != pixels(plain, "plain.png")
