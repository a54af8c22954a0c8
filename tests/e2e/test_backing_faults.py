"""`knfn dev` on the default project: one instance per state dir, own servers, kills survived.

Two `knfn dev` on two state directories start at the same moment on the default ports (the old
race: the loser adopted the winner's Postgres). Then Postgres and S3 of one of them are killed
with SIGKILL while events and uploads flow: the ingress answers 503 while a server is down, the
supervisor restarts it, and every event answered 202 is delivered.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from knfn.backing import postgres, process
from tests.support import REPO, free_port

KNFN = str(Path(sys.executable).parent / "knfn")
BROKER = "broker-ingress.knative-eventing.svc.cluster.local"
READY = "ready; Ctrl-C stops everything"
pytestmark = pytest.mark.slow


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    state: Path
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def services(self) -> dict[str, dict[str, int]]:
        data: dict[str, dict[str, int]] = json.loads((self.state / "services.json").read_text())
        return data

    def knfn_db(self) -> str:
        password = (self.state / "postgres" / "password").read_text().strip()
        return postgres.url(self.services()["postgres"]["port"], "knfn", password)

    def request(
        self, host: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            headers={"Host": host, **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def post_event(self, event_id: str) -> int:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/tests/backing",
            "ce-type": "test.backing",
            "Content-Type": "application/json",
        }
        return self.request(BROKER, "/default/default", b'{"n": 1}', headers)[0]


def env_for(state: Path, port: int, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "S3_ENDPOINT_URL", "KNFN_PG_PORT", "KNFN_S3_PORT")
    }
    env.update(
        KNFN_PORT=str(port),
        KNFN_ADMIN_PORT=str(free_port()),
        KNFN_STATE_DIR=str(state),
        KNFN_DISPATCHERS="1",
        **extra,
    )
    return env


def start_dev(base: Path, name: str, state: Path | None = None) -> Dev:
    state = state or base / name / ".knfn"
    state.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(REPO), "dev"],
            env=env_for(state, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Dev(proc, state, port, log)


def wait_ready(dev: Dev, began: float, timeout: float = 180.0) -> float:
    """Seconds from began until dev printed that it is ready."""
    while READY not in dev.text():
        assert dev.proc.poll() is None, dev.text()
        assert time.monotonic() - began < timeout, dev.text()
        time.sleep(0.2)
    return time.monotonic() - began


def stop_dev(dev: Dev) -> None:
    if dev.proc.poll() is None:
        dev.proc.send_signal(signal.SIGTERM)
        try:
            dev.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(dev.proc.pid, signal.SIGKILL)
            dev.proc.wait(10)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dev, Dev]]:
    """Two `knfn dev` on two state directories, started at the same moment, default ports."""
    base = tmp_path_factory.mktemp("pair")
    began = time.monotonic()
    first, second = start_dev(base, "a"), start_dev(base, "b")
    try:
        times = sorted([wait_ready(first, began), wait_ready(second, began)])
        print(f"start-up of two at once: {times[0]:.1f} s and {times[1]:.1f} s")
        yield first, second
    finally:
        stop_dev(first)
        stop_dev(second)


def test_two_state_dirs_at_once_each_get_their_own_postgres(pair: tuple[Dev, Dev]) -> None:
    """Both come up; each runs its own postmaster on its own data directory."""
    found = [postgres.postmaster(dev.state / "postgres" / "data") for dev in pair]
    assert found[0] is not None and found[1] is not None
    assert found[0].pid != found[1].pid and found[0].port != found[1].port
    for dev, pm in zip(pair, found, strict=True):
        assert dev.services()["postgres"]["pid"] == pm.pid
        assert "Traceback" not in dev.text()
    s3_pids = [dev.services()["s3"]["pid"] for dev in pair]
    assert s3_pids[0] != s3_pids[1] and all(process.is_running(p) for p in s3_pids)


def test_same_state_dir_is_refused_naming_the_holder(pair: tuple[Dev, Dev], tmp_path: Path) -> None:
    """A second `knfn dev` on a state dir in use exits 1 at once naming the first's pid;
    `knfn reset` and `knfn services down` refuse too, and the data stays."""
    first = pair[0]
    began = time.monotonic()
    done = dev_once([], env_for(first.state, free_port()))
    assert done.returncode == 1, done.stderr
    assert f"pid {first.proc.pid}" in done.stderr and "knfn dev" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert time.monotonic() - began < 10
    print(f"same state dir: exit 1 in {time.monotonic() - began:.2f}s: {done.stderr.strip()}")
    for args in (["reset", "--yes"], ["services", "down"]):
        refused = subprocess.run(
            [KNFN, "--project-dir", str(REPO), *args],
            env=env_for(first.state, free_port()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and f"pid {first.proc.pid}" in refused.stderr, args
    assert (first.state / "postgres" / "data" / "PG_VERSION").exists()
    assert process.is_running(first.services()["postgres"]["pid"])


def test_postgres_without_password_is_refused(pair: tuple[Dev, Dev]) -> None:
    """A client that gives no password gets no connection; knfn's own URL works."""
    port = pair[0].services()["postgres"]["port"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url(port, "knfn"), connect_timeout=5)
    with psycopg.connect(pair[0].knfn_db(), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _delivered(dev: Dev, ids: set[str]) -> set[str]:
    with psycopg.connect(dev.knfn_db(), connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT e.attributes->>'id' FROM knfn_deliveries d JOIN knfn_events e"
            " ON e.id = d.event_id WHERE d.trigger = 'event-display-all'"
            " AND d.state = 'delivered' AND e.attributes->>'id' = ANY(%s)",
            (sorted(ids),),
        ).fetchall()
    return {row[0] for row in rows}


def test_postgres_killed_mid_flow_recovers_and_loses_nothing(pair: tuple[Dev, Dev]) -> None:
    """kill -9 of Postgres: the ingress answers 503 (never another error) until the supervisor
    has restarted it, then 202 again; every event answered 202 is delivered."""
    dev = pair[1]
    accepted = {f"before-{i}" for i in range(20) if dev.post_event(f"before-{i}") == 202}
    assert len(accepted) == 20
    pid = dev.services()["postgres"]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    statuses: list[int] = []
    recovered_at = None
    n = 0
    while recovered_at is None:
        assert time.monotonic() - killed < 90, (statuses[-20:], dev.text()[-3000:])
        n += 1
        status = dev.post_event(f"during-{n}")
        statuses.append(status)
        if status == 202:
            accepted.add(f"during-{n}")
            if 503 in statuses:
                recovered_at = time.monotonic()
        time.sleep(0.05)
    assert set(statuses) <= {202, 503}, statuses
    assert 503 in statuses
    after = {f"after-{i}" for i in range(20) if dev.post_event(f"after-{i}") == 202}
    assert len(after) == 20
    accepted |= after
    deadline = time.monotonic() + 90
    while (missing := accepted - _delivered(dev, accepted)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not missing, (sorted(missing)[:10], dev.text()[-3000:])
    log = dev.text()
    assert "postgres died; restarting it" in log
    assert "postgres restarted in" in log
    assert dev.services()["postgres"]["pid"] != pid
    print(
        f"postgres: 503 for {statuses.count(503)} posts, 202 again "
        f"{recovered_at - killed:.2f} s after kill -9; {len(accepted)} accepted, all delivered"
    )


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def test_s3_killed_ingest_answers_503_then_201(pair: tuple[Dev, Dev]) -> None:
    """kill -9 of S3: ingest answers 503 while it is down, 201 once the supervisor restarted it."""
    dev, png = pair[1], _png()
    host = f"ingest.default.localhost:{pair[1].port}"

    def upload() -> int:
        return dev.request(host, "/", png, {"Content-Type": "image/png"})[0]

    assert upload() == 201
    pid = dev.services()["s3"]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    statuses: list[int] = []
    while not (statuses and statuses[-1] == 201 and 503 in statuses):
        assert time.monotonic() - killed < 90, (statuses[-20:], dev.text()[-3000:])
        statuses.append(upload())
        time.sleep(0.1)
    recovered = time.monotonic() - killed
    assert set(statuses) <= {201, 503}, statuses
    assert "s3 restarted in" in dev.text()
    print(f"s3: 503 for {statuses.count(503)} uploads, 201 again {recovered:.2f} s after kill -9")


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def dev_once(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`knfn dev` run to its exit (it is expected to refuse), output captured."""
    return subprocess.run(
        [KNFN, "--project-dir", str(REPO), "dev", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_busy_explicit_port_fails_in_one_line_leaving_nothing(tmp_path: Path) -> None:
    """`knfn dev --port` on a taken port: exit 1 within 2 s, one line, nothing started."""
    state = tmp_path / ".knfn"
    with taken_port() as port:
        began = time.monotonic()
        done = dev_once(["--port", str(port)], env_for(state, free_port()))
        took = time.monotonic() - began
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"knfn: error: gateway (--port/KNFN_PORT): port {port} on 127.0.0.1 is already in use"
    ]
    assert took < 2.0, took
    assert not (state / "postgres").exists() and not (state / "s3").exists()
    leftover = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftover.stdout == ""
    print(f"busy --port refused in {took:.2f} s")


def test_busy_explicit_backing_port_fails_before_anything_starts(tmp_path: Path) -> None:
    """KNFN_PG_PORT on a taken port: exit 1 at once naming the variable, nothing started."""
    state = tmp_path / ".knfn"
    with taken_port() as port:
        done = dev_once([], env_for(state, free_port(), KNFN_PG_PORT=str(port)))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"knfn: error: postgres (KNFN_PG_PORT): port {port} is already in use (change or unset it)"
    ]
    assert not (state / "postgres").exists()
