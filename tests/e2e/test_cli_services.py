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
    up = knfn(project, "services", "up", "--show-secrets")
    assert up.returncode == 0, up.stderr
    assert "started postgres" in up.stderr and "started s3" in up.stderr
    printed = dict(line.split("=", 1) for line in up.stdout.splitlines())
    secrets = (project / ".knfn" / "postgres" / "password").read_text().strip()
    assert f":{secrets}@" in printed["DATABASE_URL"]
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

    restarted = knfn(project, "services", "up", "--show-secrets")
    assert restarted.returncode == 0, restarted.stderr
    url = dict(line.split("=", 1) for line in restarted.stdout.splitlines())["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]


def test_services_up_prints_no_secrets(project: Path) -> None:
    """Without --show-secrets the Postgres password and the S3 secret key are printed as ***."""
    up = knfn(project, "services", "up")
    assert up.returncode == 0, up.stderr
    printed = dict(line.split("=", 1) for line in up.stdout.splitlines())
    password = (project / ".knfn" / "postgres" / "password").read_text().strip()
    secret = json.loads((project / ".knfn" / "s3" / "credentials.json").read_text())["secret_key"]
    assert password not in up.stdout + up.stderr and secret not in up.stdout + up.stderr
    assert printed["AWS_SECRET_ACCESS_KEY"] == "***"
    assert printed["DATABASE_URL"].startswith("postgresql://postgres:***@127.0.0.1:")
    status = knfn(project, "services", "status")
    assert password not in status.stdout


def test_trust_data_dir_of_an_older_knfn_gets_a_password(project: Path) -> None:
    """A data directory made with trust auth is switched to SCRAM on the next start."""
    first = knfn(project, "services", "up", "--show-secrets")
    assert first.returncode == 0, first.stderr
    url = dict(line.split("=", 1) for line in first.stdout.splitlines())["DATABASE_URL"]
    hba = project / ".knfn" / "postgres" / "data" / "pg_hba.conf"
    with psycopg.connect(url, autocommit=True) as conn:
        # As an older knfn left it: trust for everyone, no password set.
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
    assert knfn(project, "services", "down").returncode == 0
    again = knfn(project, "services", "up", "--show-secrets")
    assert again.returncode == 0, again.stderr
    url = dict(line.split("=", 1) for line in again.stdout.splitlines())["DATABASE_URL"]
    assert "trust" not in "".join(
        line for line in hba.read_text().splitlines() if not line.startswith("#")
    )
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    port = json.loads((project / ".knfn" / "services.json").read_text())["postgres"]["port"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/functions", connect_timeout=5)


def test_filer_port_refuses_requests_without_a_token(project: Path) -> None:
    """SeaweedFS's filer HTTP port answers 401 to GET, PUT and DELETE without a signed token,
    while the S3 API with the credentials works."""
    import urllib.error
    import urllib.request

    from knfn.backing import s3

    up = knfn(project, "services", "up", "--show-secrets")
    assert up.returncode == 0, up.stderr
    env = dict(line.split("=", 1) for line in up.stdout.splitlines())
    creds = s3.Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    client = s3.client(env["S3_ENDPOINT_URL"], creds)
    client.create_bucket(Bucket="probe")
    client.put_object(Bucket="probe", Key="kept", Body=b"data")
    pid = json.loads((project / ".knfn" / "services.json").read_text())["s3"]["pid"]
    argv = process.cmdline(pid)
    filer = next(a.split("=", 1)[1] for a in argv if a.startswith("-filer.port="))
    for method, path, body in (
        ("GET", "/buckets/probe/kept", None),
        ("GET", "/buckets/probe/", None),
        ("PUT", "/buckets/probe/planted", b"x"),
        ("DELETE", "/buckets/probe/kept", None),
    ):
        req = urllib.request.Request(f"http://127.0.0.1:{filer}{path}", data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5)
        assert info.value.code in (401, 403), (method, path)
    assert client.get_object(Bucket="probe", Key="kept")["Body"].read() == b"data"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="probe").get("Contents", [])]
    assert keys == ["kept"]


def test_admin_without_services_says_how_to_start_them(project: Path) -> None:
    """`knfn admin migrate` with nothing running exits 1 and names the way out."""
    done = knfn(project, "admin", "migrate")
    assert done.returncode == 1
    assert "knfn services up" in done.stderr
