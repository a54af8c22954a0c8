"""`knfn services` and `knfn admin` as a user runs them: the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from knfn.backing import process
from tests.support import REPO, free_port

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow


def knfn(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")
    }
    env.update(
        KNFN_PROJECT_DIR=str(project),
        KNFN_PG_PORT=str(free_port()),
        KNFN_S3_PORT=str(free_port()),
    )
    return subprocess.run([KNFN, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project directory with the repository's migrations and nothing running."""
    shutil.copytree(REPO / "postgres" / "migrations", tmp_path / "postgres" / "migrations")
    yield tmp_path
    knfn(tmp_path, "services", "down")


def test_services_lifecycle_and_idempotent_admin(project: Path) -> None:
    """up, status, migrate twice (second applies nothing), buckets, down, data kept on restart."""
    up = knfn(project, "services", "up")
    assert up.returncode == 0, up.stderr
    assert "started postgres" in up.stderr and "started s3" in up.stderr
    printed = dict(line.split("=", 1) for line in up.stdout.splitlines())
    rows = json.loads(knfn(project, "services", "status", "--json").stdout)
    assert [(r["name"], r["state"]) for r in rows] == [("postgres", "running"), ("s3", "running")]

    first = knfn(project, "admin", "migrate")
    assert first.returncode == 0, first.stderr
    count = len(list((project / "postgres" / "migrations").glob("*.sql")))
    assert first.stdout.startswith(f"applied {count} migration(s)")
    second = knfn(project, "admin", "migrate")
    assert (second.returncode, second.stdout.strip()) == (0, "applied 0 migration(s)")

    made = knfn(project, "admin", "buckets")
    assert made.stdout.strip() == "created 1 bucket(s): uploads"
    again = knfn(project, "admin", "buckets")
    assert again.stdout.strip() == "created 0 bucket(s)"

    with psycopg.connect(printed["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives')")

    pids = [r["pid"] for r in rows]
    down = knfn(project, "services", "down")
    assert down.returncode == 0 and "stopped s3, postgres" in down.stderr
    assert not any(process.is_running(pid) for pid in pids)

    restarted = knfn(project, "services", "up")
    url = dict(line.split("=", 1) for line in restarted.stdout.splitlines())["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]


def test_admin_without_services_says_how_to_start_them(project: Path) -> None:
    """`knfn admin migrate` with nothing running exits 1 and names the way out."""
    done = knfn(project, "admin", "migrate")
    assert done.returncode == 1
    assert "knfn services up" in done.stderr
