"""A graceful stop of `knfn dev` on the default project never loses an accepted event.

2,000 events are posted to the default broker (type ``demo.shutdown``: only the
event-display-all Trigger matches), a slow request to hello is in flight, then knfn gets
SIGTERM (or SIGINT). The slow request must complete, knfn must exit 0 within its deadline
leaving no process behind, and after a restart every event answered 202 must be delivered,
none dead-lettered or failed: attempts cut short by the stop are released, not counted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest

from knfn.backing import services
from tests.support import KNFN, REPO, dev_env, post_events, services_down

EVENTS = 2000
TYPE = "demo.shutdown"
STOP_DEADLINE = 60.0
pytestmark = pytest.mark.slow


@dataclass
class Project:
    state: Path
    env: dict[str, str]
    port: int
    log: Path

    def start(self) -> subprocess.Popen[bytes]:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                [KNFN, "--project-dir", str(REPO), "dev"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while b"ready; Ctrl-C stops everything" not in self.log.read_bytes()[offset:]:
            assert proc.poll() is None, self.tail()
            assert time.monotonic() < deadline, self.tail()
            time.sleep(0.2)
        return proc

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cli(self, *args: str) -> None:
        subprocess.run([KNFN, "--project-dir", str(REPO), *args], env=self.env, check=True,
                       capture_output=True)  # fmt: skip

    def database_url(self) -> str:
        cfg = services.BackingConfig.from_env(self.state, self.env)
        found = services.find(cfg)
        assert found is not None, "the backing services are not running"
        return found.knfn_database_url


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    state = tmp_path / ".knfn"
    env = dev_env(state)
    port = int(env["KNFN_PORT"])
    running = Project(state, env, port, tmp_path / "dev.log")
    yield running
    services_down(env)


async def post_all(port: int, run: str, count: int, clients: int = 64) -> dict[str, int]:
    """Binary-mode POSTs to the default broker; the status each event id got."""
    ids = [f"{run}-{n}" for n in range(count)]
    events = [
        {"specversion": "1.0", "id": i, "source": "/tests/shutdown", "type": TYPE} for i in ids
    ]
    return dict(zip(ids, await post_events(port, events, clients), strict=True))


def delivery_states(url: str, run: str) -> dict[str, int]:
    """Deliveries of this run's events by state (dead-letter deliveries as 'dead-letter')."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT CASE WHEN d.kind = 'subscriber' THEN d.state ELSE d.kind END, count(*)"
            " FROM knfn_deliveries d JOIN knfn_events e ON e.id = d.event_id"
            " WHERE e.attributes->>'type' = %s AND e.attributes->>'id' LIKE %s GROUP BY 1",
            (TYPE, f"{run}-%"),
        ).fetchall()
    return {state: int(n) for state, n in rows}


def delivered_ids(url: str, run: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT e.attributes->>'id' FROM knfn_deliveries d JOIN knfn_events e"
            " ON e.id = d.event_id WHERE d.kind = 'subscriber' AND d.state = 'delivered'"
            " AND e.attributes->>'id' LIKE %s",
            (f"{run}-%",),
        ).fetchall()
    return {r[0] for r in rows}


def slow_hello(port: int, result: dict[str, object]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/?sleep=3000", headers={"Host": "hello.default.localhost"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            result["status"], result["body"] = resp.status, resp.read()
    except Exception as exc:
        result["status"], result["body"] = -1, repr(exc)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_with_queued_events_loses_none(project: Project, sig: signal.Signals) -> None:
    """Queued events and a request in flight survive a graceful stop: the request completes,
    knfn exits 0 leaving nothing running, and after a restart every 202 is delivered."""
    run = f"{sig.name.lower()}-{os.getpid()}"
    proc = project.start()
    family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]

    statuses = asyncio.run(post_all(project.port, run, EVENTS))
    accepted = {i for i, status in statuses.items() if status == 202}
    assert len(accepted) == EVENTS, {s for s in statuses.values() if s != 202}

    slow: dict[str, object] = {}
    request = threading.Thread(target=slow_hello, args=(project.port, slow))
    request.start()
    time.sleep(0.5)  # the slow request has reached hello
    # The replicas started so far (more may start under load) are part of what must go.
    family += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    started = time.monotonic()
    os.kill(proc.pid, sig)
    code = proc.wait(STOP_DEADLINE)
    stop_seconds = time.monotonic() - started
    request.join(30)
    log = project.tail()
    assert code == 0, log
    assert slow.get("status") == 200, (slow, log)
    assert b"hello" in slow["body"], slow  # type: ignore[operator]
    left = [pid for pid in family if psutil.pid_exists(pid) and
            psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
    assert not left, [psutil.Process(p).cmdline() for p in left]
    released = int(log.split(" delivery attempt(s) released")[0].rsplit("shutdown: ", 1)[1])

    # The queue as the stop left it, read with the backing services alone.
    project.cli("services", "up")
    url = project.database_url()
    before = delivery_states(url, run)
    assert set(before) <= {"delivered", "pending"}, before
    assert sum(before.values()) == EVENTS, before
    delivered_before = before.get("delivered", 0)

    restarted = project.start()
    try:
        deadline = time.monotonic() + 120
        while len(delivered_ids(url, run)) < EVENTS:
            assert time.monotonic() < deadline, (delivery_states(url, run), project.tail())
            time.sleep(0.5)
        after = delivery_states(url, run)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(STOP_DEADLINE)
    assert delivered_ids(url, run) == accepted
    assert after == {"delivered": EVENTS}, after
    print(
        f"\n{sig.name}: accepted {len(accepted)}, delivered before stop {delivered_before},"
        f" pending at stop {before.get('pending', 0)}, released {released},"
        f" delivered after restart {EVENTS - delivered_before}, lost 0,"
        f" stopped in {stop_seconds:.1f}s"
    )
