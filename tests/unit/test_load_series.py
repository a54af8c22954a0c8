"""knfn load's rows: revisions read from /status, the CSV, the plain line, panic spans, cold
starts, and the PNG drawn from them."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from knfn.load import plot
from knfn.load.command import write_csv
from knfn.load.series import (
    RevisionSample,
    Row,
    cold_starts,
    csv_header,
    csv_row,
    panic_spans,
    plain_line,
    revision_sample,
    revisions_of,
)
from knfn.load.stats import Outcome, Timeline
from knfn.routing import Target

# A revision as /status shows it without the autoscaler's insides, and with them (the
# "autoscaler" object and "cold_starts" of each revision).
TODAY: dict[str, Any] = {
    "name": "hello-00001",
    "desired_replicas": 3,
    "ready_replicas": 2,
    "traffic_percent": 100,
    "tag": None,
}
INSIDES: dict[str, Any] = {
    **TODAY,
    "autoscaler": {
        "metric": "concurrency",
        "target": 7.0,
        "stable_value": 12.5,
        "panic_value": 20.0,
        "panic_mode": True,
        "panic_since": "2026-12-02T03:01:02.123Z",
        "desired_pods": 4,
        "ready_pods": 2,
        "excess_burst_capacity": -100,
        "activator_in_path": True,
    },
    "cold_starts": 2,
}


def status(*revisions: dict[str, Any], name: str = "hello") -> dict[str, Any]:
    return {"services": [{"name": name, "namespace": "default", "revisions": list(revisions)}]}


def test_a_revision_without_the_autoscaler_insides_has_them_unknown() -> None:
    """Desired and ready come from the fields /status has always had; the rest is None."""
    rev = revision_sample(TODAY)
    assert (rev.name, rev.desired, rev.ready, rev.traffic_percent) == ("hello-00001", 3, 2, 100)
    assert (rev.panic, rev.cold_starts, rev.stable_value, rev.target) == (None, None, None, None)


def test_a_revision_with_the_autoscaler_insides_reads_them() -> None:
    """With the autoscaler object, desired is the KPA's desired_pods, and panic is known."""
    rev = revision_sample(INSIDES)
    assert (rev.desired, rev.ready, rev.panic, rev.cold_starts) == (4, 2, True, 2)
    assert (rev.stable_value, rev.panic_value, rev.target, rev.metric) == (
        12.5, 20.0, 7.0, "concurrency",
    )  # fmt: skip


def test_revisions_of_the_service_its_tag_and_no_other() -> None:
    """hello.default and candidate-hello.default find hello's revisions; other names none."""
    tagged = {**TODAY, "name": "hello-00002", "tag": "candidate"}
    data = status(TODAY, tagged)
    data["services"].append({"name": "query", "namespace": "default", "revisions": [TODAY]})
    names = [r.name for r in revisions_of(data, Target("default", "hello"))]
    assert names == ["hello-00001", "hello-00002"]
    assert revisions_of(data, Target("default", "candidate-hello")) == revisions_of(
        data, Target("default", "hello")
    )
    assert revisions_of(data, Target("other", "hello")) == ()
    assert revisions_of(data, Target("default", "nope")) == ()
    assert revisions_of({}, Target("default", "hello")) == ()


def rows_of(history: list[tuple[int, int, int, bool | None, int | None]]) -> list[Row]:
    """Rows from (t, desired, ready, panic, cold_starts) of hello-00001, no requests."""
    timeline = Timeline()
    return [
        Row(
            timeline.second(t),
            0,
            (RevisionSample("hello-00001", desired, ready, panic=panic, cold_starts=cold),),
        )
        for t, desired, ready, panic, cold in history
    ]


def test_csv_has_four_columns_per_revision_and_empty_unknowns(tmp_path: Path) -> None:
    """A revision absent from a row, and fields /status lacks, are empty cells."""
    timeline = Timeline()
    timeline.record_sent(0.5)
    timeline.record(Outcome(0.5, 0.5, 0.75, 503))
    first = Row(timeline.second(1), 3, (revision_sample(INSIDES),))
    second = Row(timeline.second(2), 0, (revision_sample({**TODAY, "name": "hello-00002"}),))
    path = write_csv([first, second], tmp_path / "load.csv")
    read = list(csv.DictReader(path.open()))
    assert list(read[0]) == csv_header(["hello-00001", "hello-00002"])
    assert read[0]["errors_5xx"] == "1" and read[0]["errors_no_answer"] == "0"
    assert (read[0]["p50_ms"], read[0]["in_flight"], read[0]["rps"]) == ("250.0", "3", "1.0")
    assert [read[0][f"hello-00001_{f}"] for f in ("desired", "ready", "panic", "cold_starts")] == [
        "4", "2", "1", "2",
    ]  # fmt: skip
    assert read[0]["hello-00002_ready"] == ""
    assert read[1]["hello-00001_desired"] == "" and read[1]["hello-00002_ready"] == "2"
    assert read[1]["hello-00002_panic"] == "" and read[1]["p50_ms"] == ""
    assert csv_row(second, ["hello-00002"])[0] == "2"


PLAIN = re.compile(
    r"t=(\d+)s sent=\d+ done=\d+ rps=[\d.]+ errors=\d+( \[[^]]+\])? "
    r"p50=(-|\d+ms) p90=(-|\d+ms) p99=(-|\d+ms) in_flight=\d+"
    r"( \| [a-z0-9-]+ desired=\d+ ready=\d+( panic=(yes|no))?( cold_starts=\d+)?)*"
)


def test_plain_line_names_errors_by_status_and_each_revision() -> None:
    """One line: time, counts, errors by status, percentiles, in flight, then revisions."""
    timeline = Timeline()
    for status_code in (200, 400, 400, 503):
        timeline.record_sent(0.1)
        timeline.record(Outcome(0.1, 0.1, 0.3, status_code))
    row = Row(timeline.second(1), 5, (revision_sample(INSIDES), revision_sample(TODAY)))
    line = plain_line(row)
    assert PLAIN.fullmatch(line), line
    assert line.startswith("t=1s sent=4 done=4 rps=4.0 errors=3 [400:2 503:1] p50=200ms")
    assert "| hello-00001 desired=4 ready=2 panic=yes cold_starts=2 |" in line
    assert line.endswith("| hello-00001 desired=3 ready=2")


def test_panic_spans_cover_the_seconds_seen_panicking() -> None:
    """Runs of panic samples become spans, half a second either side; unknown is not panic."""
    rows = rows_of(
        [(t, 1, 1, p, None) for t, p in enumerate([None, False, True, True, False, True])]
    )
    assert panic_spans(rows, "hello-00001") == [(1.5, 3.5), (4.5, 5.5)]
    assert panic_spans(rows, "hello-00009") == []


def test_cold_starts_from_the_count_or_from_zero_to_ready() -> None:
    """With /status's count: where it rose and by how much; without it: ready 0 -> n."""
    counted = rows_of(
        [(0, 0, 0, None, 3), (1, 1, 0, None, 4), (2, 3, 1, None, 4), (3, 3, 3, None, 6)]
    )
    assert cold_starts(counted, "hello-00001") == [(1, 1), (3, 2)]
    seen = rows_of([(0, 0, 0, None, None), (1, 1, 0, None, None), (2, 1, 1, None, None),
                    (3, 0, 0, None, None), (4, 1, 2, None, None)])  # fmt: skip
    assert cold_starts(seen, "hello-00001") == [(2, 1), (4, 1)]


def test_plot_is_a_png_of_the_documented_size(tmp_path: Path) -> None:
    """The plot is written at WIDTH_PX x HEIGHT_PX with panic shading and cold starts drawn."""
    timeline = Timeline()
    for i in range(200):
        at = i / 20
        timeline.record_sent(at)
        timeline.record(Outcome(at, at, at + 0.1 + (i % 7) / 100, 200 if i % 50 else 503))
    history = [(0, 0, 0, False, 0), (1, 1, 0, False, 1), (2, 3, 1, True, 1), (3, 5, 3, True, 1),
               (4, 5, 5, True, 1), (5, 5, 5, False, 1), (6, 2, 2, False, 1), (7, 0, 0, False, 1),
               (8, 1, 1, False, 2), (9, 0, 0, False, 2), (10, 0, 0, False, 2)]  # fmt: skip
    rows = [
        Row(timeline.second(t), 4, r.revisions)
        for t, r in zip(range(11), rows_of(history), strict=True)
    ]
    path = plot.draw(rows, "GET hello.default/, 4 clients for 10s", 10.0, tmp_path / "x.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (plot.WIDTH_PX, plot.HEIGHT_PX)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # drawn, not a blank canvas


@pytest.mark.parametrize("rows", [[], rows_of([(0, 0, 0, None, None)])[:1]])
def test_plot_of_a_run_with_little_in_it_is_still_drawn(tmp_path: Path, rows: list[Row]) -> None:
    """No rows, or /status never answered: a PNG all the same."""
    bare = [Row(r.second, 0, ()) for r in rows]
    path = plot.draw(bare, "nothing", 0.0, tmp_path / "empty.png")
    with Image.open(path) as image:
        assert image.size == (plot.WIDTH_PX, plot.HEIGHT_PX)
