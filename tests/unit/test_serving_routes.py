"""Serving across revisions with fake replicas: traffic splits and tags, a new revision taking
over once ready, unreachable revisions drained, and stop reaching every replica."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from knfn import manifests as mf
from knfn.routing import Target
from knfn.serving.revision_runtime import RevisionRuntime
from knfn.serving.traffic import TrafficTarget
from tests.unit.fakes import World, service, settle, world

HELLO = Target("default", "hello")


def run(tmp_path: Path, scenario: Callable[[World], Awaitable[None]]) -> World:
    w = world(tmp_path, ready_at_once=True)

    async def main() -> None:
        try:
            await scenario(w)
        finally:
            await w.serving.stop(grace=0)

    asyncio.run(main())
    return w


def routed(w: World, target: Target = HELLO) -> str | None:
    rt = w.serving.route(target)
    return None if rt is None else rt.name


def revisions(w: World) -> list[str]:
    return list(w.serving.services[("default", "hello")].revisions)


def runtime(w: World, name: str) -> RevisionRuntime:
    return w.serving.services[("default", "hello")].revisions[name]


def split(*targets: TrafficTarget) -> tuple[TrafficTarget, ...]:
    return targets


def test_a_new_revision_takes_the_traffic_once_ready_and_the_old_one_drains(
    tmp_path: Path,
) -> None:
    """Until the new revision has a ready replica the old one serves; then the new one does and
    the old one's replicas are retired (drained for timeoutSeconds) and it is forgotten."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}))
        assert routed(w) == "hello-00001"
        w.replicas.ready_at_once = False
        await w.apply(service(env={"V": "2"}))
        assert revisions(w) == ["hello-00001", "hello-00002"]
        assert routed(w) == "hello-00001"
        [old] = w.replicas.of("hello-00001")
        assert not old.stopped
        [new] = w.replicas.of("hello-00002")
        new.become_ready()
        await settle()
        assert routed(w) == "hello-00002"
        assert old.stops == [300]
        assert revisions(w) == ["hello-00002"]

    run(tmp_path, scenario)


def test_an_unreachable_revision_with_requests_in_flight_stays_until_they_end(
    tmp_path: Path,
) -> None:
    """The old revision takes no new requests, keeps its in-flight one, and goes once it ends."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}))
        old_rt = runtime(w, "hello-00001")
        held = await old_rt.throttler.acquire()
        await w.apply(service(env={"V": "2"}))
        assert routed(w) == "hello-00002"
        assert not old_rt.routable and old_rt.active == 0
        assert "hello-00001" in revisions(w)  # a request is still in flight there
        old_rt.throttler.release(held)
        await w.apply(service(env={"V": "2"}))  # routes are looked at again (as every tick)
        assert revisions(w) == ["hello-00002"]

    run(tmp_path, scenario)


def test_traffic_split_draws_revisions_by_percent(tmp_path: Path) -> None:
    """80/20 between a pinned revision and the latest: both are drawn, near their weights."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}))
        traffic = split(TrafficTarget(80, "hello-00001"), TrafficTarget(20))
        await w.apply(service(env={"V": "2"}, traffic=traffic))
        assert sorted(revisions(w)) == ["hello-00001", "hello-00002"]
        random.seed(7)
        drawn = Counter(routed(w) for _ in range(1000))
        assert set(drawn) == {"hello-00001", "hello-00002"}
        assert 700 <= drawn["hello-00001"] <= 900
        # Both revisions are reachable, so both keep their replicas.
        assert all(not r.stopped for r in w.replicas.made)

    run(tmp_path, scenario)


def test_tags_get_their_own_hosts_and_reach_their_revision(tmp_path: Path) -> None:
    """A tag routes <tag>-<service> to its revision, even one at 0 percent, which stays up."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}))
        traffic = split(TrafficTarget(0, "hello-00001", "old"), TrafficTarget(100, None, "now"))
        await w.apply(service(env={"V": "2"}, traffic=traffic))
        assert w.serving.known_hosts() == [
            "hello.default",
            "now-hello.default",
            "old-hello.default",
        ]
        assert routed(w, Target("default", "old-hello")) == "hello-00001"
        assert routed(w, Target("default", "now-hello")) == "hello-00002"
        assert {routed(w) for _ in range(50)} == {"hello-00002"}
        assert routed(w, Target("default", "other")) is None
        assert routed(w, Target("elsewhere", "hello")) is None
        assert not w.replicas.of("hello-00001")[0].stopped

    run(tmp_path, scenario)


def test_dropping_a_tag_drains_the_revision_it_kept(tmp_path: Path) -> None:
    """Once no route reaches a pinned revision any more, its replicas are retired."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}))
        traffic = split(TrafficTarget(0, "hello-00001", "old"), TrafficTarget(100))
        await w.apply(service(env={"V": "2"}, traffic=traffic))
        [old] = w.replicas.of("hello-00001")
        assert not old.stopped
        await w.apply(service(env={"V": "2"}))
        assert old.stopped and revisions(w) == ["hello-00002"]
        assert "old-hello.default" not in w.serving.known_hosts()

    run(tmp_path, scenario)


def test_traffic_to_an_unknown_revision_is_refused_naming_it(tmp_path: Path) -> None:
    """spec.traffic naming a revision knfn never ran is a manifest error naming the field."""

    async def scenario(w: World) -> None:
        traffic = split(TrafficTarget(100, "hello-00042"))
        with pytest.raises(mf.ManifestError, match=r"spec.traffic.*'hello-00042'"):
            await w.apply(service(traffic=traffic))

    run(tmp_path, scenario)


def test_before_any_revision_is_ready_requests_go_to_the_latest(tmp_path: Path) -> None:
    """Nothing ready yet: the route is the latest revision, whose throttler holds requests."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = False
        await w.apply(service())
        assert routed(w) == "hello-00001"
        rt = runtime(w, "hello-00001")
        assert rt.ready == 0 and w.serving.services[("default", "hello")].latest_ready is None

    run(tmp_path, scenario)


def test_a_removed_service_is_stopped_and_unrouted(tmp_path: Path) -> None:
    """A Service gone from the manifests: its replicas stop and its host is unknown."""

    async def scenario(w: World) -> None:
        await w.apply(service(), service("other"))
        await w.apply(service())
        assert w.serving.known_hosts() == ["hello.default"]
        assert all(r.stopped for r in w.replicas.made if r.spec.service == "other")

    run(tmp_path, scenario)


def test_stop_stops_every_replica_of_every_revision(tmp_path: Path) -> None:
    """Stop reaches every replica: of each Service, of a pinned revision, and of a revision
    already draining; grace 0 kills what is still draining."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}), service("other"))
        for replica in w.replicas.made:
            replica.drains = True  # exits only when its requests end, or at the grace
        await w.apply(service(env={"V": "2"}), service("other"))
        [draining] = w.replicas.of("hello-00001")
        assert draining.stopped and not draining.exited
        await w.serving.stop(grace=0)
        assert all(r.exited for r in w.replicas.made), [
            (r.name, r.stops) for r in w.replicas.made if not r.exited
        ]

    run(tmp_path, scenario)


def test_a_drained_revision_is_let_go_once_its_replicas_have_exited(tmp_path: Path) -> None:
    """Once the old revision's last replica has exited, stop no longer has it to stop."""

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}))
        [old] = w.replicas.made
        old.drains = True
        await w.apply(service(env={"V": "2"}))
        assert old.stops == [300] and not old.exited
        stop = asyncio.Event()
        loop = asyncio.create_task(w.serving.run(2.0, stop))
        await w.clock.advance(3)
        old.finish()
        await w.clock.advance(1)
        stop.set()
        await asyncio.wait_for(loop, 1)
        await w.serving.stop(grace=0)
        assert old.stops == [300] and old.returncode == 0

    run(tmp_path, scenario)


def test_graceful_stop_waits_for_replicas_to_drain(tmp_path: Path) -> None:
    """Stop with a grace: replicas get SIGTERM and the stop waits until they have exited."""

    async def scenario(w: World) -> None:
        await w.apply(service(), service("other"))
        for replica in w.replicas.made:
            replica.drains = True
        stopping = asyncio.create_task(w.serving.stop(grace=30))
        await w.clock.advance(5)
        assert not stopping.done() and all(r.stops for r in w.replicas.made)
        for replica in w.replicas.made:
            replica.finish()
        await settle()
        assert stopping.done()
        assert [r.returncode for r in w.replicas.made] == [0, 0]

    run(tmp_path, scenario)


def test_a_revision_at_zero_percent_without_a_tag_stays_active(tmp_path: Path) -> None:
    """Every revision spec.traffic names is active (knative/serving
    pkg/reconciler/labeler/metasync.go), at 0% and untagged too: its min-scale holds through
    minutes of idle ticks; without min-scale the KPA takes it to zero when idle, and it is not
    dropped at once as a revision no route names is."""
    min_one = {"autoscaling.knative.dev/min-scale": "1"}

    async def scenario(w: World) -> None:
        await w.apply(service(env={"V": "1"}, annotations=min_one), service("other"))
        await w.apply(
            service(env={"V": "2"}, traffic=split(TrafficTarget(0, "hello-00001"),
                                                  TrafficTarget(100))),
            service("other", env={"V": "2"}, traffic=split(TrafficTarget(0, "other-00001"),
                                                           TrafficTarget(100))),
        )  # fmt: skip
        [kept] = w.replicas.of("hello-00001")
        [idle] = w.replicas.of("other-00001")
        assert not kept.stopped and not idle.stopped
        stop = asyncio.Event()
        loop = asyncio.create_task(w.serving.run(2.0, stop))
        await w.clock.advance(200)  # past the 60 s stable window and the 30 s grace
        stop.set()
        await asyncio.wait_for(loop, 1)
        assert not kept.stopped and runtime(w, "hello-00001").desired == 1
        assert idle.stopped
        states = {
            r["name"]: (r["routing_state"], r["traffic_percent"])
            for s in w.serving.status()["services"]
            for r in s["revisions"]
        }
        assert states["hello-00001"] == ("active", 0) and states["other-00001"] == ("active", 0)

    run(tmp_path, scenario)
