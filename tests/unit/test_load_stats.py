"""knfn load's pure core: 1 s buckets, percentiles, the open-loop schedule, the error budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knfn.load import schedule
from knfn.load.stats import (
    CLIENT_ERROR,
    NO_ANSWER,
    SERVER_ERROR,
    Outcome,
    Timeline,
    judge,
    parse_error_budget,
    percentile,
    second_of,
)


def test_percentile_is_the_nearest_rank() -> None:
    """p50, p90, p99 of 1..100 are 50, 90, 99; of one value that value; of none None."""
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="0, 100"):
        percentile(values, 0)


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0.1, 100))
def test_percentile_is_one_of_the_values_and_ordered(values: list[float], q: float) -> None:
    """A percentile is a value of the data, between its min and max, rising with q."""
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    assert percentile(ordered, min(100.0, q + 1)) >= p  # type: ignore[operator]


def test_second_t_covers_the_second_before_it() -> None:
    """Second 1 is [0, 1), second 2 is [1, 2): a moment on the boundary starts the next."""
    assert [second_of(x) for x in (0.0, 0.999, 1.0, 1.5, 2.0)] == [1, 1, 2, 2, 3]


def test_outcomes_fall_into_the_second_they_ended_in() -> None:
    """Sent counts by send time, answers, statuses, error classes and latency by end time."""
    timeline = Timeline()
    for at in (0.1, 0.2, 0.9, 1.1):
        timeline.record_sent(at)
    timeline.record(Outcome(0.1, 0.1, 0.3, 200))
    timeline.record(Outcome(0.2, 0.2, 1.2, 503))
    timeline.record(Outcome(0.9, 0.9, 1.4, None, "timeout"))
    timeline.record(Outcome(1.1, 1.1, 1.5, 400))
    first, second = timeline.second(1), timeline.second(2)
    assert (first.sent, first.requests, first.statuses) == (3, 1, {"200": 1})
    assert first.errors == {CLIENT_ERROR: 0, SERVER_ERROR: 0, NO_ANSWER: 0}
    assert first.p50 == pytest.approx(0.2)
    assert (second.sent, second.requests) == (1, 3)
    assert second.statuses == {"503": 1, "timeout": 1, "400": 1}
    assert second.errors == {CLIENT_ERROR: 1, SERVER_ERROR: 1, NO_ANSWER: 1}
    assert second.p99 == pytest.approx(1.0)  # 0.2 -> 1.2
    assert timeline.second(9).requests == 0 and timeline.second(9).p50 is None
    assert (timeline.sent, timeline.done, timeline.error_count) == (4, 4, 3)


def test_latency_counts_from_the_intended_time() -> None:
    """An open-loop request sent late pays for the wait (no coordinated omission)."""
    late = Outcome(intended=1.0, sent=1.3, done=1.31, status=200)
    assert late.latency == pytest.approx(0.31)
    timeline = Timeline()
    timeline.record(late)
    assert timeline.latency_percentiles()["max"] == pytest.approx(0.31)


def test_open_loop_schedule_is_evenly_spaced() -> None:
    """--rps 50 -d 5 is 250 requests, one every 20 ms from 0; due() finds what is due."""
    times = list(schedule.arrivals(50, 5))
    assert len(times) == 250 == schedule.count(50, 5)
    assert times[:3] == [0.0, 0.02, 0.04] and times[-1] == pytest.approx(4.98)
    assert schedule.count(50, 0.1) == 5  # not 4 from 4.999...
    assert schedule.due(times, 0, 0.05) == 3
    assert schedule.due(times, 3, 0.05) == 3
    assert schedule.due(times, 3, 100) == 250
    with pytest.raises(ValueError):
        schedule.count(0, 5)


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("1%", 0.01), ("0.05", 0.05), (" 2.5 % ", 0.025), ("0", 0.0), ("100%", 1.0)],
)
def test_error_budget_is_a_fraction_or_a_percentage(text: str, fraction: float) -> None:
    """--max-errors takes 0.05 or 5%."""
    assert parse_error_budget(text) == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("text", "why"), [("5", "above 100%"), ("lots", "not a fraction"), ("-1%", "not")]
)
def test_bad_error_budget_says_how_to_write_it(text: str, why: str) -> None:
    """A value that is neither is refused, quoting it."""
    with pytest.raises(ValueError, match=why) as caught:
        parse_error_budget(text)
    assert repr(text) in str(caught.value)


def test_verdict_passes_at_the_limit_and_fails_above_it() -> None:
    """1 error in 100 is within 1%; 2 are above; nothing answered fails."""
    assert judge(100, 1, 0.01).ok
    above = judge(100, 2, 0.01)
    assert not above.ok and above.rate == 0.02
    assert "2.00% (2 of 100) is above --max-errors 1.00%" in above.message
    assert not judge(0, 0, 1.0).ok
    assert judge(10, 10, 1.0).ok
