"""`knfn load` as a user runs it (a subprocess, no terminal) against `knfn dev` on the default
project: hello scales out under 30 in flight, the CSV and the PNG say so, --rps holds its rate,
the plain output is one line a second, and --max-errors sets the exit code."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from knfn.load import plot
from tests.support import KNFN, DevRun, knfn_dev

pytestmark = pytest.mark.slow

LINE = re.compile(
    r"t=(?P<t>\d+)s sent=\d+ done=\d+ rps=[\d.]+ errors=\d+( \[[^]]+\])? "
    r"p50=(-|\d+ms) p90=(-|\d+ms) p99=(-|\d+ms) in_flight=\d+"
    r"( \| hello-\d{5} desired=\d+ ready=\d+( panic=(yes|no))?( cold_starts=\d+)?)+"
)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    with knfn_dev(tmp_path_factory.mktemp("load")) as running:
        yield running


def knfn_load(dev: DevRun, *args: str) -> subprocess.Popen[str]:
    """`knfn load` with the dev's ports in its environment, stdout a pipe (no terminal)."""
    return subprocess.Popen(
        [KNFN, "load", "hello", *args],
        env=dict(dev.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_hello_scales_out_under_30_in_flight(dev: DevRun, tmp_path: Path) -> None:
    """-c 30 on a 200 ms path for 15 s: a line each second as it happens; the CSV shows
    hello's ready replicas rising from where they started; the PNG has the documented size."""
    proc = knfn_load(dev, "-c", "30", "-d", "15", "--path", "/?sleep=200", "--out", str(tmp_path))
    assert proc.stdout is not None
    arrivals: list[tuple[float, str]] = []
    for line in proc.stdout:
        arrivals.append((time.monotonic(), line.rstrip("\n")))
    assert proc.wait(60) == 0, [text for _, text in arrivals] + [proc.stderr.read()]  # type: ignore[union-attr]

    lines = [(at, text) for at, text in arrivals if text.startswith("t=")]
    assert all(LINE.fullmatch(text) for _, text in lines), lines
    assert [int(LINE.fullmatch(text)["t"]) for _, text in lines] == list(  # type: ignore[index]
        range(1, len(lines) + 1)
    )
    assert 15 <= len(lines) <= 16
    # Printed as the seconds pass, not all at the end.
    assert 12 <= lines[14][0] - lines[0][0] <= 20

    table = rows(tmp_path / "load.csv")
    assert len(table) >= 10
    ready = [int(row["hello-00001_ready"]) for row in table]
    assert max(ready) >= 2 and max(ready) > ready[0], ready
    assert all(r >= ready[0] for r in ready[1:]), ready
    assert sum(int(row["requests"]) for row in table) > 500
    assert all(row["errors_5xx"] == row["errors_no_answer"] == "0" for row in table)

    png = tmp_path / "load.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.size == (plot.WIDTH_PX, plot.HEIGHT_PX)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50


def test_open_loop_holds_its_rate(dev: DevRun, tmp_path: Path) -> None:
    """--rps 50 -d 5: 250 requests (within 5 %), all sent within the 5 s, spread over them."""
    proc = knfn_load(dev, "--rps", "50", "-d", "5", "--out", str(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    table = rows(tmp_path / "load.csv")
    sent = [int(row["sent"]) for row in table]
    assert 0.95 * 250 <= sum(sent) <= 1.05 * 250, sent
    assert sum(sent[1:6]) == sum(sent), sent  # none was sent after its 5 s
    assert all(35 <= n <= 65 for n in sent[1:6]), sent
    assert re.search(r"sent / answered\s*│\s*250 / 250", out), out


def test_error_budget_sets_the_exit_code(dev: DevRun) -> None:
    """hello answers 400 to a bad parameter: above --max-errors is exit 1, within is 0."""
    failing = knfn_load(dev, "-c", "4", "-d", "2", "--path", "/?sleep=soon")
    out, err = failing.communicate(timeout=60)
    assert failing.returncode == 1, out + err
    assert "is above --max-errors 1.00%" in out
    assert re.search(r"errors=\d+ \[400:\d+\]", out), out

    tolerated = knfn_load(
        dev, "-c", "4", "-d", "2", "--path", "/?sleep=soon", "--max-errors", "100%"
    )
    out, err = tolerated.communicate(timeout=60)
    assert tolerated.returncode == 0, out + err
    assert "is within --max-errors 100.00%" in out


def test_ctrl_c_ends_the_load_and_still_reports(dev: DevRun, tmp_path: Path) -> None:
    """The first SIGINT stops a 60 s load early: summary printed, files written, exit 0."""
    proc = knfn_load(dev, "-c", "5", "-d", "60", "--out", str(tmp_path))
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("t=3s"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert "(stopped by Ctrl-C)" in out
    table = rows(tmp_path / "load.csv")
    assert 4 <= len(table) <= 10 and int(table[-1]["in_flight"]) == 0
    assert (tmp_path / "load.png").stat().st_size > 0
