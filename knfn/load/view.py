"""What ``knfn load`` shows: a live view on a terminal, one plain line a second otherwise,
and a summary table at the end. Drawn with rich; the numbers come from knfn/load/series.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from knfn.load.engine import LoadPlan, Result
from knfn.load.series import (
    RevisionSample,
    Row,
    cold_starts,
    panic_spans,
    plain_line,
    revision_names,
)
from knfn.load.stats import Timeline, Verdict

SPARK = " ▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40


def describe(plan: LoadPlan) -> str:
    """The load in words: `GET hello.default/?sleep=100, 50 clients for 30s`."""
    req = plan.request
    path = req.url.split("/", 3)[3] if req.url.count("/") >= 3 else ""
    mode = f"{plan.rps:g} requests/s" if plan.rps is not None else f"{plan.concurrency} clients"
    host = f"{req.routed.service}.{req.routed.namespace}"
    return f"{req.method} {host}/{path}, {mode} for {plan.duration:g}s"


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """The last `width` values as block characters scaled to their maximum."""
    shown = list(values)[-width:]
    top = max(shown, default=0.0)
    if top <= 0:
        return SPARK[0] * len(shown)
    return "".join(SPARK[round(v / top * (len(SPARK) - 1))] for v in shown)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _statuses(timeline: Timeline) -> str:
    if not timeline.statuses:
        return "-"
    return ", ".join(f"{k}: {v}" for k, v in sorted(timeline.statuses.items()))


def _insides(rev: RevisionSample) -> str:
    if rev.stable_value is None and rev.panic_value is None:
        return "-"
    parts = [f"{v:.1f}" if v is not None else "-" for v in (rev.stable_value, rev.panic_value)]
    target = f" / {rev.target:g}" if rev.target is not None else ""
    return f"{parts[0]} | {parts[1]}{target}"


def revisions_table(revisions: Sequence[RevisionSample]) -> Table:
    table = Table(title="revisions (from /status)", title_justify="left", expand=False)
    for name in (
        "revision",
        "traffic",
        "desired",
        "ready",
        "panic",
        "stable | panic / target",
        "cold starts",
    ):
        table.add_column(name, justify="left" if name == "revision" else "right")
    for rev in revisions:
        name = rev.name + (f" ({rev.tag})" if rev.tag else "")
        panic = "-" if rev.panic is None else ("[bold red]PANIC[/]" if rev.panic else "no")
        table.add_row(
            name,
            "-" if rev.traffic_percent is None else f"{rev.traffic_percent}%",
            str(rev.desired),
            str(rev.ready),
            panic,
            _insides(rev),
            "-" if rev.cold_starts is None else str(rev.cold_starts),
        )
    return table


class PlainView:
    """One line a second on stdout (knfn/load/series.py plain_line); notes on stderr."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out, self.err = out, err

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, row: Row, timeline: Timeline) -> None:
        print(plain_line(row), file=self.out, flush=True)

    def note(self, message: str) -> None:
        print(f"knfn: {message}", file=self.err, flush=True)


class LiveView:
    """A live terminal view redrawn each second: load, latency, errors, revisions."""

    def __init__(self, console: Console, plan: LoadPlan) -> None:
        self.console = console
        self.plan = plan
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.live = Live(self._render(Timeline()), console=console, refresh_per_second=4)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.live.__exit__(kind, exc, tb)

    def update(self, row: Row, timeline: Timeline) -> None:
        self.rows.append(row)
        self.live.update(self._render(timeline))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def _render(self, timeline: Timeline) -> RenderableType:
        row = self.rows[-1] if self.rows else None
        head = Text.assemble(
            ("knfn load ", "bold"),
            describe(self.plan),
            f"   t={row.t if row else 0}s",
        )
        load = Table.grid(padding=(0, 2))
        load.add_column(style="bold")
        load.add_column()
        rps = [r.rps for r in self.rows[1:]]
        if row is not None:
            s = row.second
            load.add_row("requests/s", f"{row.rps:.1f}  {sparkline(rps)}")
            load.add_row("latency", f"p50 {_ms(s.p50)}   p90 {_ms(s.p90)}   p99 {_ms(s.p99)}")
            load.add_row("in flight", str(row.in_flight))
        load.add_row("sent / done", f"{timeline.sent} / {timeline.done}")
        errors = timeline.error_count
        load.add_row(
            "answers",
            Text(_statuses(timeline), style="red" if errors else ""),
        )
        parts: list[RenderableType] = [head, load]
        if row is not None and row.revisions:
            parts.append(revisions_table(row.revisions))
        parts += [Text(f"knfn: {n}", style="yellow") for n in self.notes]
        return Group(*parts)


def make_view(console: Console, plan: LoadPlan) -> LiveView | PlainView:
    """The live view on a terminal, plain lines otherwise (a pipe, a file, CI)."""
    return LiveView(console, plan) if console.is_terminal else PlainView()


def summary(result: Result, verdict: Verdict, files: Sequence[Path] = ()) -> RenderableType:
    """The table printed at the end, the error budget's verdict and the files written."""
    timeline, plan = result.timeline, result.plan
    table = Table(title=f"knfn load: {describe(plan)}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    ended = " (stopped by Ctrl-C)" if result.interrupted else ""
    table.add_row("load", f"{result.load_seconds:.1f} s{ended}")
    table.add_row("sent / answered", f"{timeline.sent} / {timeline.done}")
    rate = timeline.done / result.load_seconds if result.load_seconds > 0 else 0.0
    table.add_row("throughput", f"{rate:.1f} requests/s")
    table.add_row("answers", _statuses(timeline))
    lat = timeline.latency_percentiles()
    table.add_row(
        "latency",
        "   ".join(f"{name} {_ms(value)}" for name, value in lat.items()),
    )
    for name in revision_names(result.rows):
        seen = [r for row in result.rows if (r := row.revision(name)) is not None]
        cold = sum(n for _, n in cold_starts(result.rows, name))
        panic = sum(end - start for start, end in panic_spans(result.rows, name))
        detail = (
            f"desired up to {max(r.desired for r in seen)}, "
            f"ready up to {max(r.ready for r in seen)}, cold starts {cold}"
        )
        if any(r.panic is not None for r in seen):
            detail += f", panic {panic:.0f} s"
        table.add_row(name, detail)
    if not result.status_seen:
        table.add_row("replicas", "not shown: /status did not answer for this Service")
    style = "green" if verdict.ok else "bold red"
    parts: list[RenderableType] = [table, Text(verdict.message, style=style)]
    parts += [Text(f"wrote {path}") for path in files]
    return Group(*parts)
