"""``knfn load`` end to end: run the plan with its view, print the summary, write the CSV and
the PNG, and turn the error budget's verdict into the exit code (0 within it, 1 above)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvloop
from rich.console import Console

from knfn.load import engine, view
from knfn.load.engine import LoadPlan, Result
from knfn.load.series import Row, csv_header, csv_row, revision_names
from knfn.load.stats import Verdict, judge


@dataclass(frozen=True)
class Output:
    """Where the files go: DIR/<stem>.csv and DIR/<stem>.png."""

    directory: Path
    stem: str = "load"

    @property
    def csv(self) -> Path:
        return self.directory / f"{self.stem}.csv"

    @property
    def png(self) -> Path:
        return self.directory / f"{self.stem}.png"


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    """The rows as a CSV, one line a second (columns: knfn/load/series.py csv_header)."""
    names = revision_names(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(csv_header(names))
        out.writerows(csv_row(row, names) for row in rows)
    return path


def write_files(result: Result, output: Output) -> list[Path]:
    from knfn.load import plot  # matplotlib takes a moment to import: only when asked

    return [
        write_csv(result.rows, output.csv),
        plot.draw(result.rows, view.describe(result.plan), result.load_seconds, output.png),
    ]


def run(
    plan: LoadPlan, max_errors: float, output: Output | None, console: Console
) -> tuple[Result, Verdict]:
    """Run the load, show it, write what was asked; the result and its verdict."""
    with view.make_view(console, plan) as shown:
        result = uvloop.run(engine.run(plan, shown))
    verdict = judge(result.timeline.done, result.timeline.error_count, max_errors)
    files = write_files(result, output) if output is not None else []
    console.print(view.summary(result, verdict, files))
    return result, verdict
