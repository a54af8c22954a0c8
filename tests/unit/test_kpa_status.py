"""What the KPA decides from, in /status and under Knative's metric names: the pure mapping,
and a revision in the fake world (scripted clock) going into panic and out of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from knfn import metrics
from knfn.serving.autoscaling import RevisionScaling
from knfn.serving.kpa import Decision
from knfn.serving.kpa_status import FIELDS, autoscaler_status, iso_utc
from knfn.serving.revision_runtime import RevisionRuntime
from knfn.serving.throttler import Endpoint
from tests.unit.fakes import AT_ZERO, World, service, settle, world


def decision(**changes: object) -> Decision:
    fields: dict[str, object] = dict(
        desired_pods=5, panicking=False, excess_burst_capacity=90, stable_value=12.5,
        panic_value=20.25, reason="", panic_since=None,
    )  # fmt: skip
    fields.update(changes)
    return Decision(**fields)  # type: ignore[arg-type]


# ---- the pure mapping --------------------------------------------------------------------------


def test_status_carries_the_decision_the_target_and_the_ready_count() -> None:
    """Every contract field, in order, from the decision, the settings and the ready count."""
    got = autoscaler_status(
        RevisionScaling(target=7.0), decision(), ready_pods=3, activator_in_path=False, now=50.0,
        wall_now=1_800_000_000.0,
    )  # fmt: skip
    assert tuple(got) == FIELDS
    assert got == {
        "metric": "concurrency", "target": 7.0, "stable_value": 12.5, "panic_value": 20.25,
        "panic_mode": False, "panic_since": None, "desired_pods": 5, "ready_pods": 3,
        "excess_burst_capacity": 90, "activator_in_path": False,
    }  # fmt: skip


def test_panic_since_is_the_wall_clock_moment_the_panic_started() -> None:
    """A panic that started 12.5 s ago on the monotonic clock is dated 12.5 s before now."""
    got = autoscaler_status(
        RevisionScaling(), decision(panicking=True, panic_since=87.5), ready_pods=1,
        activator_in_path=False, now=100.0, wall_now=1_800_000_012.5,
    )  # fmt: skip
    assert got["panic_mode"] is True
    assert got["panic_since"] == "2027-01-15T08:00:00.000Z" == iso_utc(1_800_000_000.0)


def test_iso_utc_keeps_milliseconds() -> None:
    """Dates carry milliseconds and a Z, as the contract shows."""
    assert iso_utc(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"


def revision_row(metric: str) -> metrics.RevisionAutoscaling:
    status = autoscaler_status(
        RevisionScaling(metric=metric, target=70.0), decision(panicking=True, panic_since=1.0),
        ready_pods=3, activator_in_path=False, now=2.0, wall_now=2.0,
    )  # fmt: skip
    return metrics.RevisionAutoscaling(
        "default", "hello", "hello-00001", status, 5, not_ready=1, pending=1, terminating=2
    )


def test_knative_metrics_carry_the_status_values() -> None:
    """Concurrency scaling: the concurrency gauges, the pod counts, EBC and panic, as in status."""
    assert metrics.knative_autoscaler_samples(revision_row("concurrency")) == {
        "autoscaler_desired_pods": 5, "autoscaler_requested_pods": 5,
        "autoscaler_actual_pods": 3, "autoscaler_not_ready_pods": 1,
        "autoscaler_pending_pods": 1, "autoscaler_terminating_pods": 2,
        "autoscaler_excess_burst_capacity": 90,
        "autoscaler_stable_request_concurrency": 12.5,
        "autoscaler_panic_request_concurrency": 20.25,
        "autoscaler_target_concurrency_per_pod": 70.0, "autoscaler_panic_mode": 1,
        "knfn_activator_in_path": 0, "kn_revision_request_queued": 0,
    }  # fmt: skip


def test_rps_scaling_reports_the_rps_gauges_instead() -> None:
    """Scaling on rps: the requests-per-second gauges, not the concurrency ones (as upstream)."""
    samples = metrics.knative_autoscaler_samples(revision_row("rps"))
    assert samples["autoscaler_stable_requests_per_second"] == 12.5
    assert samples["autoscaler_panic_requests_per_second"] == 20.25
    assert samples["autoscaler_target_requests_per_second"] == 70.0
    assert not any("concurrency" in name for name in samples)


def test_collector_exports_every_revision_with_knative_labels() -> None:
    """The collector reads its source at scrape time, labelled as Knative labels revisions."""
    collector = metrics.KnativeAutoscalerCollector()
    assert all(not family.samples for family in collector.collect())
    collector.watch(lambda: [revision_row("concurrency")])
    desired = next(f for f in collector.collect() if f.name == "autoscaler_desired_pods")
    [sample] = desired.samples
    assert sample.value == 5.0
    assert sample.labels == {
        "namespace_name": "default", "service_name": "hello",
        "configuration_name": "hello", "revision_name": "hello-00001",
    }  # fmt: skip


# ---- a revision in the fake world ------------------------------------------------------------


def run(tmp_path: Path, scenario: object) -> World:
    w = world(tmp_path)

    async def main() -> None:
        try:
            await scenario(w)  # type: ignore[operator]
        finally:
            await w.serving.stop(grace=0)

    asyncio.run(main())
    return w


def latest(w: World, name: str) -> RevisionRuntime:
    return w.serving.services[("default", name)].latest


def autoscaler(w: World, name: str) -> dict[str, object]:
    [rev] = [r for s in w.serving.status()["services"] if s["name"] == name for r in s["revisions"]]
    found: dict[str, object] = rev["autoscaler"]
    return found


def exported(w: World, name: str) -> dict[str, float]:
    """The Knative autoscaler samples of name's revision, as /metrics would read them now."""
    collector = metrics.KnativeAutoscalerCollector()
    collector.watch(w.serving.autoscaling)
    return {
        f.name: s.value
        for f in collector.collect()
        for s in f.samples
        if s.labels["service_name"] == name
    }


def test_panic_since_is_set_when_panic_starts_and_cleared_when_it_ends(tmp_path: Path) -> None:
    """Ten requests held at containerConcurrency 1: the next tick panics and /status dates it;
    the load gone, a stable window later the panic ends and panic_since is null again; /metrics
    says the same at each step."""

    async def scenario(w: World) -> None:
        w.replicas.ready_at_once = True
        await w.apply(service("bursty", cc=1))
        rt = latest(w, "bursty")
        stop = asyncio.Event()
        loop = asyncio.create_task(w.serving.run(2.0, stop))
        try:
            assert autoscaler(w, "bursty")["panic_mode"] is False
            held = [asyncio.create_task(rt.throttler.acquire()) for _ in range(10)]
            await w.clock.advance(2)
            started = w.clock.wall()  # the tick that saw the burst decided at this moment
            status = autoscaler(w, "bursty")
            assert status["panic_mode"] is True
            assert status["panic_since"] == iso_utc(started)
            assert status["target"] == pytest.approx(0.7)  # cc 1 at 70% utilization
            assert status["desired_pods"] == rt.decider.last.desired_pods > 1
            samples = exported(w, "bursty")
            assert samples["autoscaler_panic_mode"] == 1.0
            assert samples["autoscaler_desired_pods"] == status["desired_pods"]
            assert samples["autoscaler_actual_pods"] == status["ready_pods"] == rt.ready

            await w.clock.advance(20)  # still panicking: the date does not move
            assert autoscaler(w, "bursty")["panic_since"] == iso_utc(started)

            for task in held:
                endpoint: Endpoint = await task
                rt.throttler.release(endpoint)
            await w.clock.advance(70)  # a stable window (60 s) below the threshold
            status = autoscaler(w, "bursty")
            assert status["panic_mode"] is False and status["panic_since"] is None
            assert exported(w, "bursty")["autoscaler_panic_mode"] == 0.0
        finally:
            stop.set()
            await asyncio.wait_for(loop, 1)

    run(tmp_path, scenario)


def test_a_request_at_zero_counts_one_cold_start(tmp_path: Path) -> None:
    """A revision at zero: the activator is in the path; a request starts a replica, which is
    one cold start. One replica's capacity (100) is below the default target burst capacity
    (211), so the activator stays in the path, as upstream's would."""

    async def scenario(w: World) -> None:
        await w.apply(service("cold", annotations=AT_ZERO))
        rt = latest(w, "cold")
        before = autoscaler(w, "cold")
        assert before["activator_in_path"] is True and before["ready_pods"] == 0
        assert rt.status(100, None)["cold_starts"] == 0
        request = asyncio.create_task(rt.throttler.acquire())
        await settle()
        w.replicas.made[0].become_ready()
        rt.throttler.release(await asyncio.wait_for(request, 1))
        await settle()
        status = rt.status(100, None)
        assert status["cold_starts"] == 1
        assert status["autoscaler"]["ready_pods"] == 1
        assert status["autoscaler"]["excess_burst_capacity"] < 0
        assert status["autoscaler"]["activator_in_path"] is True
        assert exported(w, "cold")["autoscaler_actual_pods"] == 1.0

    run(tmp_path, scenario)
