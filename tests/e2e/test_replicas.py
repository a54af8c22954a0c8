"""Replicas of the default project under `knfn dev`: long log lines, loopback only, no orphans.

One knfn runs for the module; the last test kills it with SIGKILL, then starts another on the
same state dir with a planted leftover replica, which that start must stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knfn.backing import process
from knfn.logs import PARTIAL_MARKER
from knfn.serving.replica_records import ReplicaRecord, process_table, read_boot_id, start_time
from tests.support import (
    KNFN,
    READY_LINE,
    REPO,
    admin_status,
    dev_env,
    listening_sockets,
    services_down,
)

pytestmark = pytest.mark.slow


class Dev:
    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state, self.env = state, env
        self.port, self.admin_port = int(env["KNFN_PORT"]), int(env["KNFN_ADMIN_PORT"])
        self.log = state.parent / "dev.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [KNFN, "--project-dir", str(REPO), "dev"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while self.log.read_text().count(READY_LINE) < self.runs:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)
        return self.proc

    def status(self) -> dict[str, Any]:
        return admin_status(self.admin_port)

    def replicas(self, service: str) -> list[dict[str, Any]]:
        svc = next(s for s in self.status()["services"] if s["name"] == service)
        return [r for rev in svc["revisions"] for r in rev["replicas"]]

    def post(self, host: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/",
            data=body,
            headers={"Host": host, **headers},
            method="POST",
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
                return resp.status, time.monotonic() - started
        except urllib.error.HTTPError as err:
            return err.code, time.monotonic() - started

    def records(self) -> list[ReplicaRecord]:
        return [
            ReplicaRecord.loads(p.read_text(), p)
            for p in sorted((self.state / "run" / "replicas").glob("*.json"))
        ]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`knfn dev` on the default project, free ports, its own state dir."""
    state = tmp_path_factory.mktemp("replicas") / ".knfn"
    env = dev_env(state)
    d = Dev(state, env)
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(60)
    services_down(env)  # a run that was killed left its backing servers running


def listeners(port: int) -> set[str]:
    """Local addresses listening on port."""
    return {address for address, bound in listening_sockets().values() if bound == port}


def test_replica_ports_listen_on_loopback_only(dev: Dev) -> None:
    """Every replica's port is bound to 127.0.0.1 and nothing else, and a non-loopback
    address of this machine (if it has one) refuses the connection."""
    replicas = [r for s in dev.status()["services"] for rev in s["revisions"]
                for r in rev["replicas"]]  # fmt: skip
    assert len(replicas) >= 4
    ports = [int(r["url"].rsplit(":", 1)[1]) for r in replicas]
    for port in ports:
        assert listeners(port) == {"127.0.0.1"}, (port, listeners(port))
    others = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
    for address in [a for a in others.stdout.split() if "." in a and a != "127.0.0.1"][:1]:
        with pytest.raises(OSError), socket.create_connection((address, ports[0]), timeout=2):
            pass


def test_200kb_event_to_event_display_then_50_small_ones(dev: Dev) -> None:
    """event-display logs a 200 KB event (in marked pieces) and keeps answering: 50 small
    events after it are all answered 2xx promptly, by the same replica."""
    host = f"event-display.default.localhost:{dev.port}"
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-source": "/tests/replicas",
        "ce-type": "dev.knfn.test.big",
    }
    body = json.dumps({"blob": "b" * 200_000}).encode()
    status, big_took = dev.post(host, body, {**headers, "ce-id": "big-1"})
    assert status // 100 == 2, status
    before = {r["pid"] for r in dev.replicas("event-display")}
    timings = []
    for i in range(50):
        status, took = dev.post(host, b'{"n": %d}' % i, {**headers, "ce-id": f"small-{i}"})
        assert status // 100 == 2, (i, status)
        timings.append(took)
    assert max(timings) < 5.0, timings
    print(f"200 KB event {big_took:.3f}s; 50 small: max {max(timings):.3f}s, "
          f"median {sorted(timings)[25]:.3f}s")  # fmt: skip
    assert {r["pid"] for r in dev.replicas("event-display")} == before
    pieces = [
        ln.split(" | ", 1)[1]
        for ln in dev.log.read_text().splitlines()
        if ln.startswith("event-display/")
    ]
    assert sum(p.endswith(PARTIAL_MARKER) for p in pieces) >= 12  # 200 KB in 16 KiB pieces
    logged = "".join(p.removesuffix(PARTIAL_MARKER) if p.endswith(PARTIAL_MARKER) else p + "\n"
                     for p in pieces).splitlines()  # fmt: skip
    big = [json.loads(line) for line in logged if '"big-1"' in line]
    assert len(big) == 1 and json.dumps(big[0]).count("b" * 200_000) == 1
    assert sum('"small-' in line for line in logged) == 50
    log = dev.log.read_text()
    assert "output could not be read" not in log
    assert not [ln for ln in log.splitlines() if "event-display/" in ln and "exited with" in ln]


def test_kill_9_leaves_no_replica_and_next_start_stops_leftovers(dev: Dev) -> None:
    """SIGKILL to knfn: every recorded replica group is gone within seconds. A leftover
    recorded by a run that is gone is stopped by the next `knfn dev` start."""
    assert dev.proc is not None
    records = dev.records()
    assert len(records) >= 4 and {r.owner_pid for r in records} == {dev.proc.pid}
    owner_start = start_time(dev.proc.pid)
    os.kill(dev.proc.pid, signal.SIGKILL)
    dev.proc.wait(10)
    killed = time.monotonic()
    groups = {r.pid for r in records}
    while alive := [p for p in process_table().values() if p.pgrp in groups]:
        assert time.monotonic() - killed < 5.0, alive
        time.sleep(0.05)
    print(f"replica groups gone {time.monotonic() - killed:.2f}s after SIGKILL")

    # A leftover as a killed run would have left it, had the parent-death signal not fired.
    planted = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        record = ReplicaRecord(
            "planted/planted-00001/1", planted.pid, start_time(planted.pid),
            dev.proc.pid, owner_start, read_boot_id(),
        )  # fmt: skip
        (dev.state / "run" / "replicas" / f"{planted.pid}.json").write_text(record.dumps())
        dev.start()
        assert planted.wait(5) == -signal.SIGTERM
        assert "stopped planted/planted-00001/1, left running by an earlier run" in (
            dev.log.read_text()
        )
        assert {r.owner_pid for r in dev.records()} == {dev.proc.pid}
    finally:
        if planted.poll() is None:
            planted.kill()
            planted.wait()

    # The backing servers the killed run started were adopted by this run, which stops them.
    servers = json.loads((dev.state / "services.json").read_text())
    pids = [int(rec["pid"]) for rec in servers.values()]
    assert len(pids) == 2, servers
    dev.proc.send_signal(signal.SIGTERM)
    assert dev.proc.wait(60) == 0, dev.log.read_text()[-3000:]
    assert not [pid for pid in pids if process.is_running(pid)], servers
