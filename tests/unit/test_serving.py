"""One revision's runtime with fake replicas and a scripted clock: scale from zero, reconcile,
readiness, crashes and their backoff. No processes, no sockets, no waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from knfn import metrics
from knfn.serving.revision_runtime import (
    CRASH_BACKOFF_MAX,
    HEALTHY_AFTER,
    READY_TIMEOUT,
    RevisionRuntime,
)
from knfn.serving.throttler import Endpoint
from tests.unit.fakes import AT_ZERO, World, service, settle, world


def run(tmp_path: Path, scenario: Callable[[World], Awaitable[None]]) -> World:
    w = world(tmp_path)

    async def main() -> None:
        try:
            await scenario(w)
        finally:
            await w.serving.stop(grace=0)

    asyncio.run(main())
    return w


def latest(w: World, name: str = "hello") -> RevisionRuntime:
    return w.serving.services[("default", name)].latest


def crashes(rt: RevisionRuntime) -> float:
    labels = dict(zip(("namespace", "service", "revision"), rt.labels, strict=True))
    return metrics.REGISTRY.get_sample_value("knfn_replica_crashes_total", labels) or 0.0


async def at_scale(rt: RevisionRuntime, desired: int) -> None:
    rt.desired = desired
    rt.reconcile()
    await settle()


# -- scale from zero ----------------------------------------------------------------------------


def test_request_at_zero_starts_a_replica_at_once_and_is_served_by_it(tmp_path: Path) -> None:
    """A request at zero starts a replica at once (not at the next tick) and waits for it."""

    async def scenario(w: World) -> None:
        await w.apply(service("cold", annotations=AT_ZERO))
        rt = latest(w, "cold")
        assert w.replicas.made == [] and rt.desired == 0
        request = asyncio.create_task(rt.throttler.acquire())
        await settle()
        [replica] = w.replicas.made
        assert replica.started and rt.desired == 1 and not request.done()
        replica.become_ready()
        await settle()
        endpoint = await asyncio.wait_for(request, 1)
        assert endpoint.url == replica.url and rt.ready == 1

    run(tmp_path, scenario)


def test_a_second_request_while_starting_starts_no_second_replica(tmp_path: Path) -> None:
    """Requests arriving while the first replica starts wait for it; one replica is started."""

    async def scenario(w: World) -> None:
        await w.apply(service("cold2", annotations=AT_ZERO))
        rt = latest(w, "cold2")
        requests = [asyncio.create_task(rt.throttler.acquire()) for _ in range(3)]
        await settle()
        assert len(w.replicas.made) == 1
        w.replicas.made[0].become_ready()
        await settle()
        assert all(r.done() for r in requests) and len(w.replicas.made) == 1

    run(tmp_path, scenario)


# -- readiness ----------------------------------------------------------------------------------


def test_a_replica_counts_as_ready_only_after_wait_ready(tmp_path: Path) -> None:
    """Started replicas are active but not ready, and take no requests, until wait_ready ends."""

    async def scenario(w: World) -> None:
        await w.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "2"}))
        rt = latest(w)
        first, second = w.replicas.made
        assert first.started and second.started
        assert (rt.active, rt.ready) == (2, 0)
        assert w.serving.services[("default", "hello")].latest_ready is None
        assert [r["ready"] for r in rt.status(100, None)["replicas"]] == [False, False]
        second.become_ready()
        await settle()
        assert (rt.active, rt.ready) == (2, 1)
        assert [r["ready"] for r in rt.status(100, None)["replicas"]] == [False, True]
        assert w.serving.services[("default", "hello")].latest_ready == rt.name
        endpoint = await rt.throttler.acquire()
        assert endpoint.url == second.url
        assert first.ready_timeout == READY_TIMEOUT

    run(tmp_path, scenario)


def test_a_replica_not_ready_within_ready_timeout_is_failed_and_replaced(tmp_path: Path) -> None:
    """Never ready: at READY_TIMEOUT it is stopped (grace 0), counted as a crash, replaced."""

    async def scenario(w: World) -> None:
        await w.apply(service("slowstart"))
        rt = latest(w, "slowstart")
        [first] = w.replicas.made
        before = crashes(rt)
        await w.clock.advance(READY_TIMEOUT - 1)
        assert not first.stopped and len(w.replicas.made) == 1
        await w.clock.advance(1)
        assert first.stops == [0] and crashes(rt) == before + 1
        assert "slowstart/slowstart-00001/1: " in w.log and "not ready within 60s" in w.log
        await w.clock.advance(0.5)  # the first backoff
        assert len(w.replicas.made) == 2 and rt.slots[0].replica is w.replicas.made[1]

    run(tmp_path, scenario)


def test_a_replica_that_exits_before_ready_is_replaced(tmp_path: Path) -> None:
    """Exit during start-up: the slot goes, a replacement follows the backoff."""

    async def scenario(w: World) -> None:
        await w.apply(service("earlyexit"))
        rt = latest(w, "earlyexit")
        w.replicas.made[0].crash(3)
        await settle()
        assert rt.slots == [] and "exited before it was ready" in w.log
        await w.clock.advance(0.5)
        assert len(w.replicas.made) == 2

    run(tmp_path, scenario)


def test_a_replica_that_cannot_start_is_replaced(tmp_path: Path) -> None:
    """An OSError from start (exec failed) is a failed replica: dropped, replaced after backoff."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        w.replicas.start_failures.append(OSError("exec format error"))
        await w.apply(service("nostart"))
        rt = latest(w, "nostart")
        assert rt.slots == [] and rt.ready == 0 and "exec format error" in w.log
        await w.clock.advance(0.5)
        assert len(w.replicas.made) == 2 and rt.ready == 1

    run(tmp_path, scenario)


# -- reconcile ----------------------------------------------------------------------------------


def test_reconcile_starts_the_missing_replicas_at_once(tmp_path: Path) -> None:
    """From 1 to 4 desired: three more start in the same call, with fresh names and ports."""

    async def scenario(w: World) -> None:
        await w.apply(service("up"))
        rt = latest(w, "up")
        await at_scale(rt, 4)
        names = [r.name for r in w.replicas.made]
        assert names == [f"up/up-00001/{i}" for i in (1, 2, 3, 4)]
        assert len({r.spec.port for r in w.replicas.made}) == 4
        assert all(r.spec.env["PORT"] == str(r.spec.port) for r in w.replicas.made)
        assert rt.active == 4

    run(tmp_path, scenario)


def test_scale_down_retires_starting_replicas_first_then_the_least_busy(tmp_path: Path) -> None:
    """Victims: replicas still starting (newest first), then ready ones with fewest in flight."""

    async def scenario(w: World) -> None:
        await w.apply(service("down"))
        rt = latest(w, "down")
        await at_scale(rt, 5)
        r1, r2, r3, r4, r5 = w.replicas.made
        for r in (r1, r2, r3):
            r.become_ready()
        await settle()
        busy = {r1.url: 5, r2.url: 0, r3.url: 2}
        for slot in rt.slots:
            if slot.endpoint is not None:
                slot.endpoint.in_flight = busy[slot.replica.url]
        await at_scale(rt, 4)
        assert [r for r in w.replicas.made if r.stopped] == [r5]
        await at_scale(rt, 3)
        assert r4.stopped
        await at_scale(rt, 2)
        assert r2.stopped and not r3.stopped
        await at_scale(rt, 1)
        assert r3.stopped and not r1.stopped
        await settle()
        # Retired replicas drain for timeoutSeconds; they are not crashes.
        assert r2.stops[0] == 300 and "exited" not in w.log
        assert rt.active == 1 and rt.ready == 1

    run(tmp_path, scenario)


def test_a_retired_replica_takes_no_new_requests(tmp_path: Path) -> None:
    """Retiring a ready replica takes it out of the throttler at once."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("retire", annotations={"autoscaling.knative.dev/initial-scale": "2"}))
        rt = latest(w, "retire")
        await settle()
        assert rt.ready == 2
        for slot in rt.slots:
            assert slot.endpoint is not None
        keep = rt.slots[0].endpoint
        assert isinstance(keep, Endpoint)
        keep.in_flight = 1  # the busier one stays
        await at_scale(rt, 1)
        urls = {(await rt.throttler.acquire()).url for _ in range(5)}
        assert urls == {keep.url}

    run(tmp_path, scenario)


# -- crashes ------------------------------------------------------------------------------------


def test_a_crash_drops_the_slot_and_a_replacement_follows_the_backoff(tmp_path: Path) -> None:
    """A ready replica exits: out of the throttler and the slots at once, replaced after 0.5 s."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("crashy"))
        rt = latest(w, "crashy")
        [first] = w.replicas.made
        assert rt.ready == 1
        before = crashes(rt)
        first.crash(137)
        await settle()
        assert rt.slots == [] and rt.ready == 0 and crashes(rt) == before + 1
        assert "crashy/crashy-00001/1 exited with code 137" in w.log
        await w.clock.advance(0.4)
        assert len(w.replicas.made) == 1
        await w.clock.advance(0.1)
        assert len(w.replicas.made) == 2 and rt.ready == 1

    run(tmp_path, scenario)


def test_requests_in_flight_on_a_crashed_replica_end_and_the_next_goes_to_the_replacement(
    tmp_path: Path,
) -> None:
    """The crashed replica's request releases cleanly; the next waits and gets the new one."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("inflight", cc=1))
        rt = latest(w, "inflight")
        [first] = w.replicas.made
        held = await rt.throttler.acquire()
        assert held.url == first.url
        first.crash()
        await settle()
        rt.throttler.release(held)  # the gateway's request ended (with a 502)
        waiting = asyncio.create_task(rt.throttler.acquire())
        await settle()
        assert not waiting.done()
        await w.clock.advance(0.5)
        endpoint = await asyncio.wait_for(waiting, 1)
        assert endpoint.url == w.replicas.made[1].url != first.url
        rt.throttler.release(endpoint)
        assert rt.throttler.meter.value == 0

    run(tmp_path, scenario)


def test_crash_backoff_doubles_up_to_its_cap_and_resets_after_a_healthy_run(
    tmp_path: Path,
) -> None:
    """Back-to-back crashes wait 0.5, 1, 2, ... capped at CRASH_BACKOFF_MAX; a replica that
    lived HEALTHY_AFTER resets it to 0.5."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("flappy"))
        rt = latest(w, "flappy")
        waits: list[float] = []
        for _ in range(8):
            made = len(w.replicas.made)
            w.replicas.made[-1].crash()
            await settle()
            started = w.clock()
            while len(w.replicas.made) == made:
                await w.clock.advance(0.25)
            waits.append(w.clock() - started)
        assert waits == [0.5, 1, 2, 4, 8, 16, CRASH_BACKOFF_MAX, CRASH_BACKOFF_MAX]
        await w.clock.advance(HEALTHY_AFTER + 1)
        w.replicas.made[-1].crash()
        await settle()
        await w.clock.advance(0.5)
        assert len(w.replicas.made) == 10 and rt.ready == 1

    run(tmp_path, scenario)


def test_no_replacement_starts_during_the_backoff_even_when_poked(tmp_path: Path) -> None:
    """A request arriving during the backoff waits for it to end; then one replica starts."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("pokey"))
        rt = latest(w, "pokey")
        w.replicas.made[0].crash()
        await settle()
        waiting = asyncio.create_task(rt.throttler.acquire())
        await settle()
        assert len(w.replicas.made) == 1 and not waiting.done()
        await w.clock.advance(0.5)
        assert len(w.replicas.made) == 2
        await asyncio.wait_for(waiting, 1)

    run(tmp_path, scenario)


def test_retiring_a_starting_replica_is_not_a_crash(tmp_path: Path) -> None:
    """Scaled down while starting: stopped, not counted as crashed, and no backoff delays the
    next scale-up."""

    async def scenario(w: World) -> None:
        await w.apply(service("brief"))
        rt = latest(w, "brief")
        before = crashes(rt)
        await at_scale(rt, 0)
        await settle()
        assert w.replicas.made[0].stopped and rt.active == 0
        assert crashes(rt) == before and "exited before it was ready" not in w.log
        await at_scale(rt, 1)
        assert len(w.replicas.made) == 2

    run(tmp_path, scenario)


def test_a_crashed_slot_forgotten_while_it_is_stopped_does_not_break_the_replacement(
    tmp_path: Path,
) -> None:
    """The once-a-second cleanup may drop the crashed slot while its stop is still under way;
    the replacement still follows."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("racy"))
        rt = latest(w, "racy")
        first = w.replicas.made[0]
        first.output_drain = 1.0
        first.crash()
        await settle()
        assert first.stops == [0] and first.exited  # stop() is still draining its output
        rt.forget_stopped()
        await w.clock.advance(1.5)
        assert len(w.replicas.made) == 2 and rt.ready == 1

    run(tmp_path, scenario)


# -- the autoscaler loop ------------------------------------------------------------------------


async def running(w: World, scenario: Callable[[], Awaitable[None]]) -> None:
    """scenario while Serving.run feeds the autoscalers every scripted second."""
    stop = asyncio.Event()
    loop = asyncio.create_task(w.serving.run(2.0, stop))
    try:
        await scenario()
    finally:
        stop.set()
        await asyncio.wait_for(loop, 1)


def test_an_idle_revision_scales_to_zero_and_a_request_brings_it_back(tmp_path: Path) -> None:
    """No requests: after the stable window and the grace period the last replica goes; the
    next request starts one at once."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("idle"))
        rt = latest(w, "idle")
        [first] = w.replicas.made

        async def idle() -> None:
            await w.clock.advance(30)
            assert rt.desired == 1 and not first.stopped
            await w.clock.advance(120)
            assert rt.desired == 0 and first.stopped and rt.active == 0
            request = asyncio.create_task(rt.throttler.acquire())
            await settle()
            assert len(w.replicas.made) == 2
            assert (await asyncio.wait_for(request, 1)).url == w.replicas.made[1].url

        await running(w, idle)

    run(tmp_path, scenario)


def test_a_burst_of_requests_scales_the_revision_up(tmp_path: Path) -> None:
    """Ten requests held at containerConcurrency 1 (one in flight, nine queued): within a few
    seconds the KPA asks for a replica per 0.7 of them (the 70% target) and every one is served."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("bursty", cc=1))
        rt = latest(w, "bursty")

        async def burst() -> None:
            held = [asyncio.create_task(rt.throttler.acquire()) for _ in range(10)]
            await w.clock.advance(4)
            assert rt.desired == 15 and rt.ready == 15
            assert all(h.done() and not h.exception() for h in held)
            for h in held:
                h.cancel()

        await running(w, burst)

    run(tmp_path, scenario)
