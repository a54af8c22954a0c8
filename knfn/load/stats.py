"""Outcomes of requests into 1 s buckets, latency percentiles, and the error budget.

Pure: times are seconds since the run started, given by the caller. Second ``t`` covers
``[t - 1, t)``, so the row for ``t = 1`` is the first second. A request is counted as sent in
the second it went out and as done (with its latency and status) in the second it finished,
as load generators such as hey and vegeta count throughput.

Latency is measured from the *intended* send time. In a closed loop (``-c``) that is the
moment the request went out; in an open loop (``--rps``) it is the moment the schedule said
it should go, so a request held back by a slow client loop still pays for the wait (the
"coordinated omission" that a closed loop hides: Gil Tene, "How NOT to Measure Latency").
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# The classes errors are counted by: an HTTP answer of 4xx or 5xx, or no answer at all
# (connection refused or reset, or no answer within --timeout).
CLIENT_ERROR = "4xx"
SERVER_ERROR = "5xx"
NO_ANSWER = "no answer"
ERROR_CLASSES = (CLIENT_ERROR, SERVER_ERROR, NO_ANSWER)
PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class Outcome:
    """One request: when it was meant to go, when it went, when it ended, and how."""

    intended: float
    sent: float
    done: float
    status: int | None  # None: no HTTP answer
    failure: str | None = None  # why there was no answer: "timeout", "connection"

    @property
    def latency(self) -> float:
        """Seconds from the intended send time to the end (see the module docstring)."""
        return self.done - self.intended

    @property
    def error_class(self) -> str | None:
        """Which error class this is (ERROR_CLASSES), None for a success (below 400)."""
        if self.status is None:
            return NO_ANSWER
        if self.status >= 500:
            return SERVER_ERROR
        if self.status >= 400:
            return CLIENT_ERROR
        return None

    @property
    def label(self) -> str:
        """How the request ended, as the views count it: the status code, or the failure."""
        return str(self.status) if self.status is not None else (self.failure or NO_ANSWER)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 < q <= 100) of sorted values by nearest rank; None if empty."""
    if not ordered:
        return None
    if not 0 < q <= 100:
        raise ValueError(f"a percentile is in (0, 100], not {q}")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def percentiles(values: Iterable[float]) -> tuple[float | None, ...]:
    """p50, p90 and p99 of the values (in their unit), None each when there are none."""
    ordered = sorted(values)
    return tuple(percentile(ordered, q) for q in PERCENTILES)


def second_of(at: float) -> int:
    """The row a moment falls in: second t covers [t - 1, t)."""
    return max(1, math.floor(at) + 1)


@dataclass(frozen=True)
class Second:
    """What happened in one second of the run."""

    t: int
    sent: int
    requests: int  # finished in this second, whatever the answer
    statuses: dict[str, int]  # Outcome.label -> count
    errors: dict[str, int]  # every ERROR_CLASSES key -> count
    p50: float | None  # seconds
    p90: float | None
    p99: float | None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class _Bucket:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Timeline:
    """Every request's outcome, in 1 s buckets and in total."""

    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    done: int = 0

    def _bucket(self, at: float) -> _Bucket:
        return self._buckets.setdefault(second_of(at), _Bucket())

    def record_sent(self, at: float) -> None:
        self.sent += 1
        self._bucket(at).sent += 1

    def record(self, outcome: Outcome) -> None:
        bucket = self._bucket(outcome.done)
        self.done += 1
        bucket.latencies.append(outcome.latency)
        self._latencies.append(outcome.latency)
        bucket.statuses[outcome.label] += 1
        self.statuses[outcome.label] += 1
        if outcome.error_class is not None:
            bucket.errors[outcome.error_class] += 1
            self.errors[outcome.error_class] += 1

    def second(self, t: int) -> Second:
        """The summary of second t (an empty one if nothing happened in it)."""
        bucket = self._buckets.get(t, _Bucket())
        p50, p90, p99 = percentiles(bucket.latencies)
        return Second(
            t=t,
            sent=bucket.sent,
            requests=len(bucket.latencies),
            statuses=dict(bucket.statuses),
            errors={name: bucket.errors[name] for name in ERROR_CLASSES},
            p50=p50,
            p90=p90,
            p99=p99,
        )

    def latency_percentiles(self) -> dict[str, float | None]:
        """p50, p90, p99 and max over the whole run, in seconds."""
        ordered = sorted(self._latencies)
        found: dict[str, float | None] = {f"p{q:g}": percentile(ordered, q) for q in PERCENTILES}
        found["max"] = ordered[-1] if ordered else None
        return found

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


# -- the error budget (--max-errors) ---------------------------------------------------------

_BUDGET = re.compile(r"\s*(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<percent>%?)\s*")


def parse_error_budget(text: str) -> float:
    """--max-errors as a fraction: "1%" or "0.01"; ValueError saying how to write it."""
    match = _BUDGET.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a fraction (0.01) or a percentage (1%)")
    value = float(match["number"])
    if match["percent"]:
        value /= 100
    if value > 1:
        raise ValueError(
            f"{text!r} is above 100%: write a fraction from 0 to 1 (0.05) or a percentage (5%)"
        )
    return value


@dataclass(frozen=True)
class Verdict:
    """Whether the run stayed within its error budget, and the sentence that says so."""

    ok: bool
    rate: float | None  # errors / finished requests; None when none finished
    limit: float
    message: str


def judge(finished: int, errors: int, limit: float) -> Verdict:
    """Passes when errors / finished is at most limit; a run where nothing finished fails."""
    if finished == 0:
        return Verdict(False, None, limit, "no request finished: nothing to judge, failed")
    rate = errors / finished
    ok = rate <= limit
    relation = "within" if ok else "above"
    return Verdict(
        ok,
        rate,
        limit,
        f"error rate {rate:.2%} ({errors} of {finished}) is {relation} --max-errors {limit:.2%}",
    )
