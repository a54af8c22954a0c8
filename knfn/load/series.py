"""Each second of a run as one row: the load, its latency, and the target's revisions.

Pure. The revisions come from the admin API's ``/status`` (knfn/serving.py), read by
:func:`revisions_of`: desired and ready replicas always, and, where ``knfn dev`` reports them,
the autoscaler's insides (panic mode, stable and panic averages, target) and the count of
cold starts. Fields a runtime does not report are ``None`` here and left empty in the CSV.

The rows are written as a CSV (:func:`csv_header`, :func:`csv_row`), printed as one plain
line a second when there is no terminal (:func:`plain_line`), and drawn (knfn/load/plot.py)
with the panic periods, the activator's time in the path and the cold starts found by
:func:`panic_spans`, :func:`activator_spans` and :func:`cold_starts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knfn.load.stats import ERROR_CLASSES, Second
from knfn.routing import Target


@dataclass(frozen=True)
class RevisionSample:
    """One revision of the target Service as /status showed it at one moment."""

    name: str
    desired: int
    ready: int
    traffic_percent: int | None = None
    tag: str | None = None
    panic: bool | None = None
    cold_starts: int | None = None
    stable_value: float | None = None
    panic_value: float | None = None
    target: float | None = None
    metric: str | None = None
    activator: bool | None = None  # requests went through the activator (knfn/serving/activator.py)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def revision_sample(raw: Mapping[str, Any]) -> RevisionSample:
    """A revision object of /status as a sample (fields it lacks are None)."""
    insides = raw.get("autoscaler")
    auto: Mapping[str, Any] = insides if isinstance(insides, Mapping) else {}
    desired = _count(auto.get("desired_pods"))
    panic = auto.get("panic_mode")
    return RevisionSample(
        name=str(raw["name"]),
        desired=desired if desired is not None else int(raw.get("desired_replicas", 0)),
        ready=int(raw.get("ready_replicas", 0)),
        traffic_percent=_count(raw.get("traffic_percent")),
        tag=raw.get("tag") if isinstance(raw.get("tag"), str) else None,
        panic=panic if isinstance(panic, bool) else None,
        cold_starts=_count(raw.get("cold_starts")),
        stable_value=_number(auto.get("stable_value")),
        panic_value=_number(auto.get("panic_value")),
        target=_number(auto.get("target")),
        metric=auto.get("metric") if isinstance(auto.get("metric"), str) else None,
        activator=in_path if isinstance(in_path := auto.get("activator_in_path"), bool) else None,
    )


def revisions_of(status: Mapping[str, Any], target: Target) -> tuple[RevisionSample, ...]:
    """The revisions of the Service the target host routes to: `hello` in namespace default
    for hello.default, and for a tag host (candidate-hello.default) the Service with a
    revision of that tag. Empty when /status lists no such Service."""
    for svc in status.get("services", []):
        if svc.get("namespace") != target.namespace:
            continue
        revisions = svc.get("revisions", [])
        tags = {f"{rev.get('tag')}-{svc.get('name')}" for rev in revisions if rev.get("tag")}
        if svc.get("name") == target.service or target.service in tags:
            return tuple(revision_sample(rev) for rev in revisions)
    return ()


@dataclass(frozen=True)
class Row:
    """One second of the run: its Second, the requests in flight at its end, and the
    target's revisions as last seen by then. Row 0 is the moment the load started."""

    second: Second
    in_flight: int
    revisions: tuple[RevisionSample, ...]

    @property
    def t(self) -> int:
        return self.second.t

    @property
    def rps(self) -> float:
        """Requests answered in this second (the last second of a load may be a part one)."""
        return float(self.second.requests)

    def revision(self, name: str) -> RevisionSample | None:
        return next((r for r in self.revisions if r.name == name), None)


def revision_names(rows: Sequence[Row]) -> list[str]:
    """Every revision seen in the rows, in the order they first appeared."""
    names: dict[str, None] = {}
    for row in rows:
        for rev in row.revisions:
            names.setdefault(rev.name, None)
    return list(names)


REVISION_FIELDS = ("desired", "ready", "panic", "cold_starts")


def csv_header(revisions: Sequence[str]) -> list[str]:
    """The CSV's columns: the load, then four per revision (``<revision>_desired``...)."""
    load = ["t", "sent", "requests", "rps"]
    load += [f"errors_{name.replace(' ', '_')}" for name in ERROR_CLASSES]
    load += ["p50_ms", "p90_ms", "p99_ms", "in_flight"]
    return load + [f"{rev}_{name}" for rev in revisions for name in REVISION_FIELDS]


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}"


def _cell(value: int | bool | None) -> str:
    if value is None:
        return ""
    return str(int(value))


def csv_row(row: Row, revisions: Sequence[str]) -> list[str]:
    """One row's cells, in csv_header's order; an unknown value (or revision) is empty."""
    s = row.second
    cells = [str(s.t), str(s.sent), str(s.requests), f"{row.rps:.1f}"]
    cells += [str(s.errors.get(name, 0)) for name in ERROR_CLASSES]
    cells += [_ms(s.p50), _ms(s.p90), _ms(s.p99), str(row.in_flight)]
    for name in revisions:
        rev = row.revision(name)
        if rev is None:
            cells += [""] * len(REVISION_FIELDS)
        else:
            cells += [
                _cell(rev.desired),
                _cell(rev.ready),
                _cell(rev.panic),
                _cell(rev.cold_starts),
            ]
    return cells


def _plain_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def plain_line(row: Row) -> str:
    """The line printed each second without a terminal, e.g.::

    t=3s sent=150 done=148 rps=148.0 errors=2 [503:2] p50=203ms p90=210ms p99=250ms
    in_flight=30 | hello-00001 desired=5 ready=3 panic=yes cold_starts=1

    (on one line). Unknown fields of a revision are left out.
    """
    s = row.second
    failed = {k: v for k, v in s.statuses.items() if not (k.isdigit() and int(k) < 400)}
    errors = f"errors={s.error_count}"
    if failed:
        errors += " [" + " ".join(f"{k}:{v}" for k, v in sorted(failed.items())) + "]"
    parts = [
        f"t={s.t}s sent={s.sent} done={s.requests} rps={row.rps:.1f} {errors}",
        f"p50={_plain_ms(s.p50)} p90={_plain_ms(s.p90)} p99={_plain_ms(s.p99)}",
        f"in_flight={row.in_flight}",
    ]
    line = " ".join(parts)
    for rev in row.revisions:
        line += f" | {rev.name} desired={rev.desired} ready={rev.ready}"
        if rev.panic is not None:
            line += f" panic={'yes' if rev.panic else 'no'}"
        if rev.cold_starts is not None:
            line += f" cold_starts={rev.cold_starts}"
    return line


def panic_spans(rows: Sequence[Row], revision: str) -> list[tuple[float, float]]:
    """(start, end) times of the periods the revision was seen panicking. A sample stands for
    the half second either side of it, since panic began or ended between two samples."""
    return _spans(rows, revision, lambda rev: rev.panic is True)


def activator_spans(rows: Sequence[Row], revision: str) -> list[tuple[float, float]]:
    """(start, end) times of the periods the activator was seen in the revision's path, as
    :func:`panic_spans` finds panics."""
    return _spans(rows, revision, lambda rev: rev.activator is True)


def _spans(
    rows: Sequence[Row], revision: str, seen: Callable[[RevisionSample], bool]
) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for row in rows:
        rev = row.revision(revision)
        on = rev is not None and seen(rev)
        if on and start is None:
            start = row.t - 0.5
        elif not on and start is not None:
            spans.append((start, last + 0.5))
            start = None
        last = row.t
    if start is not None:
        spans.append((start, last + 0.5))
    return spans


def cold_starts(rows: Sequence[Row], revision: str) -> list[tuple[int, int]]:
    """(t, how many) for each second in which the revision had cold starts: the increase of
    /status's cold_starts count where knfn dev reports it; otherwise a second in which its
    ready replicas went from zero to some (a start from zero is cold by definition)."""
    found: list[tuple[int, int]] = []
    previous: RevisionSample | None = None
    for row in rows:
        rev = row.revision(revision)
        if rev is None:
            continue
        if previous is not None:
            if rev.cold_starts is not None and previous.cold_starts is not None:
                if rev.cold_starts > previous.cold_starts:
                    found.append((row.t, rev.cold_starts - previous.cold_starts))
            elif previous.ready == 0 and rev.ready > 0:
                found.append((row.t, 1))
        previous = rev
    return found
