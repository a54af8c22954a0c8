"""The KPA decision, replayed against an injected clock: no sleeping, no processes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knfn.serving.autoscaling import RevisionScaling
from knfn.serving.kpa import Autoscaler, Decision, MaxWindow, MetricWindow

START = 1000.0  # any origin: the clock is monotonic seconds


class Revision:
    """A revision under load: one report a second, a decision every tick, replicas that are
    ready as soon as they are wanted (unless ``follow`` is off)."""

    def __init__(self, scaling: RevisionScaling, pods: int | None = None) -> None:
        self.autoscaler = Autoscaler(scaling)
        self.tick = int(scaling.tick_interval)
        self.now = START
        self.pods = self.autoscaler.initial_pods() if pods is None else pods
        self.history: list[tuple[float, Decision]] = []

    def run(self, seconds: int, load: float = 0.0, follow: bool = True) -> list[Decision]:
        """``load`` requests in flight (and arriving per second) for ``seconds`` seconds."""
        decisions = []
        for _ in range(seconds):
            self.now += 1
            if self.pods > 0 or load:
                self.autoscaler.record(self.now, load, load)
            if (self.now - START) % self.tick == 0:
                decision = self.autoscaler.decide(self.now, self.pods)
                self.history.append((self.now, decision))
                decisions.append(decision)
                if follow:
                    self.pods = decision.desired_pods
        return decisions

    def first_time(self, pods: int) -> float:
        return next(t for t, d in self.history if d.desired_pods == pods)


def pods_of(decisions: list[Decision]) -> list[int]:
    return [d.desired_pods for d in decisions]


# ---- the metric windows ----------------------------------------------------------------------


def test_full_window_average() -> None:
    """A value reported every second for a whole window averages to itself."""
    window = MetricWindow(60)
    for second in range(120):
        window.record(START + second, 5.0)
    assert window.average(START + 119) == 5.0


def test_partial_window_is_not_diluted() -> None:
    """Ten seconds of reports in a 60 s window average over those ten seconds."""
    window = MetricWindow(60)
    for second in range(10):
        window.record(START + second, 6.0)
    assert window.average(START + 9) == 6.0


def test_unreported_seconds_between_reports_count_as_zero() -> None:
    """A gap between two reports is idle time."""
    window = MetricWindow(60)
    window.record(START, 6.0)
    window.record(START + 5, 6.0)
    assert window.average(START + 5) == 2.0


def test_seconds_after_the_last_report_are_left_out() -> None:
    """A late report does not drag the average down; old seconds leave the window."""
    window = MetricWindow(10)
    for second in range(10):
        window.record(START + second, 4.0 if second < 5 else 8.0)
    # At +12 the window is seconds 3..12; 10..12 are unreported, so 3..9 are averaged.
    assert window.average(START + 12) == pytest.approx((2 * 4 + 5 * 8) / 7)


def test_a_window_without_reports_empties_and_restarts() -> None:
    """After a whole window of silence the average is 0, then partial again."""
    window = MetricWindow(10)
    window.record(START, 9.0)
    assert not window.is_empty(START + 10)
    assert window.is_empty(START + 11)
    assert window.average(START + 10) == 0.0
    window.record(START + 30, 3.0)
    assert window.average(START + 30) == 3.0


def test_reports_older_than_the_window_are_dropped() -> None:
    """A report for a second already out of the window changes nothing."""
    window = MetricWindow(10)
    window.record(START + 20, 2.0)
    window.record(START + 5, 100.0)
    assert window.average(START + 20) == 2.0


def test_reports_for_one_second_add_up() -> None:
    """Several sources reporting the same second are summed."""
    window = MetricWindow(10)
    window.record(START + 0.2, 2.0)
    window.record(START + 0.9, 3.0)
    assert window.average(START + 0.9) == 5.0


@given(
    size=st.integers(1, 20),
    values=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=60),
)
def test_window_average_is_the_mean_of_the_last_seconds(size: int, values: list[float]) -> None:
    """With a report every second, the average is the mean of the last `window` reports."""
    window = MetricWindow(size)
    for i, value in enumerate(values):
        window.record(START + i, value)
        recent = values[max(0, i - size + 1) : i + 1]
        assert window.average(START + i) == pytest.approx(sum(recent) / len(recent), abs=1e-5)


def test_max_window_holds_the_highest_for_the_window() -> None:
    """The highest value stays until it is a window old, then the next highest shows."""
    window = MaxWindow(10, 2)
    window.record(START, 3)
    window.record(START + 2, 7)
    window.record(START + 4, 5)
    window.record(START + 10, 1)
    assert window.current() == 7
    window.record(START + 12, 1)
    assert window.current() == 5
    window.record(START + 14, 1)
    assert window.current() == 1


# ---- steady state, panic and the rate limits -------------------------------------------------


def test_steady_load_at_target_holds_its_count() -> None:
    """Exactly 3 x target in flight for five minutes keeps 3 replicas and never panics."""
    rev = Revision(RevisionScaling(), pods=3)
    decisions = rev.run(300, load=210)
    assert set(pods_of(decisions)) == {3}
    assert not any(d.panicking for d in decisions)


def test_ten_x_step_panics_and_scales_within_one_tick() -> None:
    """A jump from 1 x to 10 x target panics at the next tick and scales up at once."""
    rev = Revision(RevisionScaling(), pods=1)
    assert set(pods_of(rev.run(120, load=70))) == {1}
    first = rev.run(2, load=700)[-1]
    assert first.panicking and first.desired_pods > 1
    later = rev.run(8, load=700)
    assert later[-1].desired_pods >= 10


def test_no_scale_down_while_panicking() -> None:
    """While panicking the count never drops, even after the load is gone."""
    rev = Revision(RevisionScaling(), pods=1)
    rev.run(120, load=70)
    panic = rev.run(10, load=700) + rev.run(50, load=0)  # panic began at the first tick
    assert all(d.panicking for d in panic)
    counts = pods_of(panic)
    assert counts == sorted(counts) and counts[-1] >= 10


def test_panic_ends_after_a_stable_window_below_threshold() -> None:
    """A stable window after the last over-threshold tick, panic ends and scale-down starts."""
    rev = Revision(RevisionScaling(), pods=1)
    rev.run(120, load=70)
    rev.run(10, load=700)
    after = rev.run(120, load=0)
    calm = [d for d in after if not d.panicking]
    assert calm, "panic never ended"
    assert calm[-1].desired_pods < 10
    assert "panic over" in calm[0].reason


@pytest.mark.parametrize(
    ("threshold", "load", "panics"),
    [(200.0, 280.0, True), (200.0, 210.0, False), (300.0, 420.0, True), (300.0, 350.0, False)],
)
def test_panic_starts_exactly_at_the_threshold(threshold: float, load: float, panics: bool) -> None:
    """Panic when the panic-window desire reaches threshold% of ready replicas, not before."""
    autoscaler = Autoscaler(RevisionScaling(panic_threshold_percentage=threshold))
    for second in range(1, 7):
        autoscaler.record(START + second, load)
    # 2 replicas ready; the panic desire is load / 70 replicas.
    assert autoscaler.decide(START + 6, 2).panicking is panics


@pytest.mark.parametrize(("rate", "steps"), [(2.0, [8, 4, 2, 1]), (4.0, [4, 1])])
def test_scale_down_is_limited_per_tick(rate: float, steps: list[int]) -> None:
    """With no load at all, each tick goes down to no less than ready / max-scale-down-rate."""
    rev = Revision(RevisionScaling(max_scale_down_rate=rate), pods=16)
    assert set(pods_of(rev.run(120, load=16 * 70))) == {16}
    rev.now += 100  # a silent stretch: nothing reported, nothing decided
    rev.now -= (rev.now - START) % rev.tick
    assert pods_of(rev.run(2 * len(steps), load=0)) == steps


def test_scale_up_is_limited_per_tick() -> None:
    """max-scale-up-rate caps growth at ceil(rate x ready) per tick."""
    rev = Revision(RevisionScaling(max_scale_up_rate=2.0), pods=1)
    counts = pods_of(rev.run(20, load=7000))
    assert counts[:4] == [2, 4, 8, 16]


# ---- scale to zero ---------------------------------------------------------------------------


def idle_after_load(scaling: RevisionScaling, idle: int = 400) -> tuple[Revision, float]:
    rev = Revision(scaling, pods=1)
    rev.run(100, load=10)
    last_load = rev.now
    rev.run(idle, load=0)
    return rev, last_load


def test_zero_after_stable_window_plus_grace_and_not_before() -> None:
    """The last replica goes a stable window plus the grace period after the last request."""
    rev, last_load = idle_after_load(RevisionScaling())
    zero_at = rev.first_time(0)
    assert last_load + 60 + 30 <= zero_at <= last_load + 60 + 30 + 2 * rev.tick
    assert all(d.desired_pods == 1 for t, d in rev.history if t < zero_at)
    assert all(d.desired_pods == 0 for t, d in rev.history if t >= zero_at)


def test_pod_retention_longer_than_grace_delays_zero() -> None:
    """scale-to-zero-pod-retention-period, when longer than the grace, is what is waited."""
    rev, last_load = idle_after_load(RevisionScaling(scale_to_zero_pod_retention_period=120))
    assert last_load + 60 + 120 <= rev.first_time(0) <= last_load + 60 + 120 + 2 * rev.tick


def test_short_local_window_and_no_grace() -> None:
    """With a 2 s window and no grace (local overrides) zero follows quickly."""
    scaling = RevisionScaling(stable_window=2, scale_to_zero_grace_period=0)
    rev, last_load = idle_after_load(scaling, idle=20)
    assert last_load + 2 <= rev.first_time(0) <= last_load + 2 + 2 * rev.tick


def test_no_zero_when_scale_to_zero_is_disabled() -> None:
    """enable-scale-to-zero false keeps one replica however long the revision idles."""
    rev, _ = idle_after_load(RevisionScaling(enable_scale_to_zero=False), idle=1000)
    assert set(pods_of([d for _, d in rev.history])) == {1}


def test_new_revision_without_traffic_goes_to_zero() -> None:
    """An untouched revision waits for its replica, then a window and the grace, then zero."""
    rev = Revision(RevisionScaling(), pods=0)
    waiting = rev.run(10, follow=False)
    assert set(pods_of(waiting)) == {1}  # initial scale held until a replica is ready
    rev.pods = 1
    ready_at = rev.now
    rev.run(200)
    assert ready_at + 60 + 30 <= rev.first_time(0) <= ready_at + 60 + 30 + 2 * rev.tick


def test_unreported_seconds_with_ready_replicas_are_idle() -> None:
    """A caller that reports only busy seconds still sees the revision scale down and out."""
    autoscaler = Autoscaler(RevisionScaling(stable_window=6, scale_to_zero_grace_period=4))
    pods = 2
    for second in range(1, 31):
        autoscaler.record(START + second, 140)
        if second % 2 == 0:
            pods = autoscaler.decide(START + second, pods).desired_pods
    assert pods == 2
    counts = []
    for second in range(32, 80, 2):  # no reports any more: every second is idle
        pods = autoscaler.decide(START + second, pods).desired_pods
        counts.append(pods)
    assert counts[-1] == 0 and counts == sorted(counts, reverse=True)


# ---- bounds, initial and activation scale ----------------------------------------------------


def test_min_scale_is_kept_when_idle() -> None:
    """min-scale replicas stay however long there is no traffic."""
    rev, _ = idle_after_load(RevisionScaling(min_scale=2), idle=600)
    assert min(pods_of([d for _, d in rev.history])) == 2


def test_max_scale_caps_any_load() -> None:
    """max-scale is never exceeded, even in panic."""
    rev = Revision(RevisionScaling(max_scale=3), pods=1)
    counts = pods_of(rev.run(60, load=7000))
    assert max(counts) == 3


@pytest.mark.parametrize(
    ("scaling", "pods"),
    [
        (RevisionScaling(), 1),
        (RevisionScaling(initial_scale=5), 5),
        (RevisionScaling(initial_scale=5, max_scale=3), 3),
        (RevisionScaling(initial_scale=1, min_scale=4), 4),
        (RevisionScaling(initial_scale=0), 0),
    ],
)
def test_initial_pods(scaling: RevisionScaling, pods: int) -> None:
    """A new revision starts with initial-scale replicas, within min- and max-scale."""
    assert Autoscaler(scaling).initial_pods() == pods


def test_initial_scale_is_held_until_reached() -> None:
    """Until initial-scale replicas have been ready, decisions do not go below it."""
    rev = Revision(RevisionScaling(initial_scale=5), pods=2)
    assert set(pods_of(rev.run(20, follow=False))) == {5}
    rev.pods = 5
    assert rev.run(2)[-1].desired_pods == 2  # reached once: normal scale-down from here


def test_initial_scale_zero_stays_at_zero_until_a_request() -> None:
    """initial-scale 0 starts no replica; the first request wakes one."""
    rev = Revision(RevisionScaling(initial_scale=0))
    assert set(pods_of(rev.run(30))) == {0}
    rev.autoscaler.poke(rev.now + 0.5)
    assert rev.autoscaler.decide(rev.now + 0.5, 0).desired_pods == 1


def test_poke_at_zero_scales_up_without_waiting_for_the_tick() -> None:
    """A request at zero replicas gets a replica from a decision made at once."""
    rev, _ = idle_after_load(RevisionScaling())
    assert rev.pods == 0
    now = rev.now + 0.3  # between two ticks
    rev.autoscaler.poke(now)
    decision = rev.autoscaler.decide(now, 0)
    assert decision.desired_pods == 1 and "activator" in decision.reason
    # The replica takes a while to start: ticks meanwhile keep asking for it.
    assert set(pods_of(rev.run(10, follow=False))) == {1}


def test_repeated_pokes_count_one_request() -> None:
    """Requests piling up during a cold start are counted once, not once per poke."""
    autoscaler = Autoscaler(RevisionScaling(initial_scale=0))
    for _ in range(50):
        autoscaler.poke(START)
    decision = autoscaler.decide(START, 0)
    assert decision.desired_pods == 1 and decision.stable_value == 1.0


def test_activation_scale_from_zero() -> None:
    """Scaling from zero wakes at least activation-scale replicas."""
    rev, _ = idle_after_load(RevisionScaling(activation_scale=3))
    assert rev.pods == 0
    rev.autoscaler.poke(rev.now + 0.1)
    assert rev.autoscaler.decide(rev.now + 0.1, 0).desired_pods == 3


def test_activation_scale_is_the_least_non_zero_count() -> None:
    """Any load at all keeps at least activation-scale replicas (not only from zero)."""
    rev = Revision(RevisionScaling(activation_scale=3), pods=1)
    assert set(pods_of(rev.run(120, load=5))) == {3}


def test_poke_respects_max_scale() -> None:
    """The activation floor never goes past max-scale."""
    autoscaler = Autoscaler(RevisionScaling(activation_scale=4, max_scale=2, initial_scale=0))
    autoscaler.poke(START)
    assert autoscaler.decide(START, 0).desired_pods == 2


# ---- scale-down delay ------------------------------------------------------------------------


def test_scale_down_delay_holds_the_highest_recent_decision() -> None:
    """With scale-down-delay, the count stays at its peak for the delay, then comes down."""
    base = RevisionScaling(stable_window=6, panic_threshold_percentage=1000)
    counts: dict[float, list[int]] = {}
    for delay in (0.0, 20.0):
        rev = Revision(replace(base, scale_down_delay=delay), pods=1)
        rev.run(20, load=350)
        counts[delay] = pods_of(rev.run(40, load=0))
    assert counts[0.0][0] < 5  # no delay: down at the first tick
    assert counts[20.0][:9] == [5] * 9  # held for 18 s of ticks...
    assert counts[20.0][10] < 5  # ...and released once the peak is 20 s old


def test_scale_down_delay_keeps_a_short_spike() -> None:
    """A spike in the middle of the delay window sets the held count."""
    scaling = RevisionScaling(stable_window=6, panic_threshold_percentage=1000, scale_down_delay=30)
    rev = Revision(scaling, pods=1)
    rev.run(20, load=70)
    rev.run(6, load=560)
    peak = rev.pods
    assert peak >= 5
    assert set(pods_of(rev.run(24, load=70))) == {peak}


# ---- what is reported besides the count ------------------------------------------------------


def test_no_data_holds_the_last_decision() -> None:
    """Before any report and with no replica ready, the initial scale stands."""
    autoscaler = Autoscaler(RevisionScaling(initial_scale=2))
    decision = autoscaler.decide(START, 0)
    assert decision.desired_pods == 2 and "holding 2" in decision.reason


@pytest.mark.parametrize(
    ("tbc", "pods", "load", "ebc"),
    [
        (211.0, 1, 0.0, 100 - 211),
        (211.0, 5, 70.0, 500 - 211 - 70),
        (0.0, 5, 70.0, 0),
        (-1.0, 5, 70.0, -1),
    ],
)
def test_excess_burst_capacity(tbc: float, pods: int, load: float, ebc: int) -> None:
    """EBC = ready x total per replica - target burst capacity - panic load; 0 and -1 as is."""
    rev = Revision(RevisionScaling(target_burst_capacity=tbc), pods=pods)
    assert rev.run(20, load=load, follow=False)[-1].excess_burst_capacity == ebc


def test_rps_metric_scales_on_requests_per_second() -> None:
    """With metric rps the count is requests per second over the rps target."""
    rev = Revision(RevisionScaling(metric="rps", target=140), pods=2)
    autoscaler = rev.autoscaler
    decisions = []
    for second in range(1, 121):
        autoscaler.record(START + second, concurrency=1.0, requests=280)
        if second % 2 == 0:
            decisions.append(autoscaler.decide(START + second, 2))
    assert set(pods_of(decisions)) == {2}


def test_decision_reports_averages_and_reason() -> None:
    """A decision carries the window averages and says why."""
    rev = Revision(RevisionScaling(), pods=2)
    decision = rev.run(60, load=140)[-1]
    assert (decision.stable_value, decision.panic_value) == (140, 140)
    assert "target 70" in decision.reason


# ---- properties ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    min_scale=st.integers(0, 3),
    extra=st.integers(0, 6),
    unlimited=st.booleans(),
    initial=st.integers(0, 5),
    activation=st.integers(1, 4),
    to_zero=st.booleans(),
    steps=st.lists(
        st.tuples(st.floats(0, 2000, allow_nan=False), st.floats(0, 1), st.booleans()),
        min_size=1,
        max_size=80,
    ),
)
def test_decisions_stay_within_min_and_max(
    min_scale: int,
    extra: int,
    unlimited: bool,
    initial: int,
    activation: int,
    to_zero: bool,
    steps: list[tuple[float, float, bool]],
) -> None:
    """Whatever the load, readiness and pokes: min <= decision <= max; zero only if allowed."""
    max_scale = 0 if unlimited else max(1, min_scale + extra)
    activation = max(activation, min_scale) if max_scale == 0 else min(activation, max_scale)
    scaling = RevisionScaling(
        min_scale=min_scale,
        max_scale=max_scale,
        initial_scale=initial,
        activation_scale=activation,
        enable_scale_to_zero=to_zero,
        stable_window=6,
        scale_to_zero_grace_period=4,
    )
    autoscaler = Autoscaler(scaling)
    desired = autoscaler.initial_pods()
    for second, (load, ready_share, poke) in enumerate(steps):
        now = START + 2 * second
        ready = math.floor(desired * ready_share)
        autoscaler.record(now, load, load)
        if poke and ready == 0:
            autoscaler.poke(now)
        desired = autoscaler.decide(now, ready).desired_pods
        assert desired >= min_scale
        assert max_scale == 0 or desired <= max_scale
        assert desired > 0 or (min_scale == 0 and (to_zero or initial == 0))


@settings(max_examples=150, deadline=None)
@given(
    up=st.floats(1.1, 10),
    down=st.floats(1.1, 5),
    steps=st.lists(
        st.tuples(st.floats(0, 5000, allow_nan=False), st.integers(1, 50)),
        min_size=1,
        max_size=60,
    ),
)
def test_decisions_respect_the_rate_limits(
    up: float, down: float, steps: list[tuple[float, int]]
) -> None:
    """Never below floor(ready / down-rate); above ceil(up-rate x ready) only in panic."""
    autoscaler = Autoscaler(RevisionScaling(max_scale_up_rate=up, max_scale_down_rate=down))
    for second, (load, ready) in enumerate(steps):
        now = START + 2 * second
        autoscaler.record(now, load, load)
        decision = autoscaler.decide(now, ready)
        assert decision.desired_pods >= math.floor(ready / down)
        if not decision.panicking:
            assert decision.desired_pods <= math.ceil(up * ready)
