"""`knfn check` as a user runs it: on the repository's functions and on broken fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.manifests.manifest_pipeline import FUNCTIONS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KNFN = Path(sys.executable).parent / "knfn"
FIXTURES = REPO / "tests" / "check_project"

# What each fixture breaks on purpose (its docstring says so); every other factor passes.
BREAKS = {
    "fx-good": set(),
    "fx-unpinned": {2},
    "fx-password": {3},
    "fx-counter": {6},
    "fx-writes": {6},
    "fx-slow-import": {9},
    "fx-ignores-sigterm": {9},
    "fx-logfile": {11},
}


def knfn_check(project: Path, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(KNFN),
            "--project-dir",
            str(project),
            "--state-dir",
            str(tmp / "state"),
            "check",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_the_repository_passes_all_twelve(tmp_path: Path) -> None:
    """Every function of the repository passes every factor, with evidence; exit 0."""
    started = time.monotonic()
    done = knfn_check(REPO, "--json", tmp=tmp_path)
    took = time.monotonic() - started
    verdicts = json.loads(done.stdout)
    not_passed = [v for v in verdicts if v["status"] != "pass"]
    assert not_passed == [], not_passed
    assert done.returncode == 0, done.stderr
    services = {v["service"] for v in verdicts}
    # The repository's own, and any a user has added with `knfn new` beside them.
    assert set(FUNCTIONS) <= services and len(verdicts) == len(services) * 12
    assert all(
        v["evidence"] and set(v) == {"service", "factor", "name", "status", "evidence", "fix"}
        for v in verdicts
    )
    print(f"knfn check on the repository: {took:.1f} s")


def test_each_fixture_fails_exactly_what_it_breaks(tmp_path: Path) -> None:
    """Each broken fixture fails exactly its factors and passes the rest; exit 1."""
    done = knfn_check(FIXTURES, "--json", tmp=tmp_path)
    assert done.returncode == 1, done.stderr
    verdicts = json.loads(done.stdout)
    failed = {
        name: {v["factor"] for v in verdicts if v["service"] == name and v["status"] == "fail"}
        for name in BREAKS
    }
    assert failed == BREAKS
    others = [v for v in verdicts if v["status"] == "warn"]
    assert others == [], others
    assert all(v["fix"] for v in verdicts if v["status"] == "fail")


def test_the_table_names_the_failures(tmp_path: Path) -> None:
    """Without --json: a table per function, the failing factor and its fix; exit 1."""
    done = knfn_check(FIXTURES, "fx-counter", tmp=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "fx-counter" in done.stdout and "processes" in done.stdout and "fail" in done.stdout
    assert "fx-good" not in done.stdout  # only the Service asked for


def test_unknown_services_are_refused(tmp_path: Path) -> None:
    """A SERVICE that is not in the manifests: a usage error listing the known ones, exit 2."""
    done = knfn_check(FIXTURES, "fx-good", "nope", tmp=tmp_path)
    assert done.returncode == 2
    assert "nope" in done.stderr and "fx-counter" in done.stderr
