"""The default project scales as its manifests ask: the replica budget (knfn/serving/budget.py)
lets hello reach what the KPA wants, never starves another Service, and lets a hot reload through.

One `knfn dev --watch` on a temporary copy of the repository's knative/, functions/ and
postgres/ (so an edit never touches the real functions/hello), with the documented local
windows: a 6 s stable window and no scale-to-zero grace. The tests run in order against it and
print the figures they measure (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import REPO, admin_status, free_port, revisions_of

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow

HELLO = "hello.default.localhost"
QUERY = "query.default.localhost"


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    project: Path
    log: Path
    started: float
    ready_after: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return admin_status(self.admin_port)

    def revisions(self, service: str) -> dict[str, dict[str, Any]]:
        return revisions_of(self.admin_port, service)

    def ready(self, service: str, revision: str) -> int:
        return int(self.revisions(service).get(revision, {}).get("ready_replicas", 0))

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> float:
        started = time.monotonic()
        while not check():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
            time.sleep(0.05)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    project = tmp_path_factory.mktemp("default-project")
    ignore = shutil.ignore_patterns("__pycache__", ".knfn")
    for name in ("knative", "functions", "postgres"):
        shutil.copytree(REPO / name, project / name, ignore=ignore)
    port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    env.update(
        KNFN_PG_PORT=str(free_port()),
        KNFN_S3_PORT=str(free_port()),
        KNFN_AUTOSCALER_STABLE_WINDOW="6s",
        KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE="0s",
    )
    log = project / "dev.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(project), "dev", "--watch",
             "--port", str(port), "--admin-port", str(admin_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    running = Dev(proc, port, admin_port, project, log, started)
    running.ready_after = running.wait_for(
        "ready", lambda: b"ready; Ctrl-C" in log.read_bytes(), timeout=120
    )
    yield running
    print(f"\nfigures: {json.dumps(running.figures, indent=1)}")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Answer:
    status: int
    body: bytes
    at: float  # time.monotonic() when the answer was read

    @property
    def revision(self) -> str | None:
        try:
            return str(json.loads(self.body)["revision"])
        except (ValueError, KeyError, TypeError):
            return None


async def load(
    dev: Dev, host: str, path: str, clients: int, stop: asyncio.Event, timeout: float = 60
) -> list[Answer]:
    """clients concurrent loops of requests until stop is set (bounded by timeout)."""
    answers: list[Answer] = []
    end = time.monotonic() + timeout
    url = f"http://127.0.0.1:{dev.port}{path}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def loop() -> None:
            while not stop.is_set() and time.monotonic() < end:
                try:
                    async with session.get(url, headers={"Host": host}) as resp:
                        body = await resp.read()
                        answers.append(Answer(resp.status, body, time.monotonic()))
                except aiohttp.ClientError as exc:
                    answers.append(Answer(0, repr(exc).encode(), time.monotonic()))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return answers


async def poll_until(dev: Dev, check: Any, timeout: float) -> float | None:
    """Seconds until check() on the status holds (polled every 100 ms), None after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check(await asyncio.to_thread(dev.status)):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


def revision_of(status: dict[str, Any], service: str, name: str) -> dict[str, Any]:
    svc = next(s for s in status["services"] if s["name"] == service)
    return next((r for r in svc["revisions"] if r["name"] == name), {})


def hello_ready(status: dict[str, Any]) -> int:
    return int(revision_of(status, "hello", "hello-00001").get("ready_replicas", 0))


def failures(answers: list[Answer]) -> list[tuple[int, bytes]]:
    return [(a.status, a.body[:200]) for a in answers if a.status != 200]


def test_burst_right_after_start_scales_hello_out(dev: Dev) -> None:
    """Right after start, with every Service at its initial replica, 30 concurrent 200 ms
    requests bring hello to 4 ready replicas within a few seconds; none fails."""

    async def burst() -> tuple[float | None, list[Answer]]:
        stop = asyncio.Event()
        task = asyncio.create_task(load(dev, HELLO, "/?sleep=200", 30, stop))
        took = await poll_until(dev, lambda s: hello_ready(s) >= 4, timeout=20)
        stop.set()
        return took, await task

    took, answers = asyncio.run(burst())
    dev.figures["start_to_ready_s"] = round(dev.ready_after, 2)
    dev.figures["burst_to_4_ready_s"] = -1 if took is None else round(took, 2)
    assert took is not None and took <= 8, f"hello not at 4 ready replicas within 8 s ({took})"
    assert failures(answers) == []


def test_busy_hello_does_not_starve_query_at_zero(dev: Dev) -> None:
    """With idle Services at zero, hello under 100 concurrent 1 s requests passes 8 ready
    replicas, and query, at zero, answers its first request within 2 s."""
    dev.wait_for(
        "every Service at zero",
        lambda: all(
            r["ready_replicas"] == 0 and not r["replicas"]
            for s in dev.status()["services"]
            for r in s["revisions"]
        ),
        timeout=90,
    )

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(load(dev, HELLO, "/?sleep=1000", 100, stop))
        took = await poll_until(dev, lambda s: hello_ready(s) > 8, timeout=30)
        status = await asyncio.to_thread(dev.status)
        query_ready = int(revision_of(status, "query", "query-00001")["ready_replicas"])
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{dev.port}/objects?limit=1", headers={"Host": QUERY}
            ) as resp,
        ):
            await resp.read()
            query_status = resp.status
        query_took = time.monotonic() - started
        peak = hello_ready(await asyncio.to_thread(dev.status))
        stop.set()
        return {"took": took, "query_took": query_took, "query_status": query_status,
                "query_ready_before": query_ready, "peak": peak, "answers": await task}  # fmt: skip

    got = asyncio.run(scenario())
    took, query_took = got["took"], got["query_took"]
    dev.figures["load100_to_9_ready_s"] = -1 if took is None else round(took, 2)
    dev.figures["hello_ready_when_query_answered"] = got["peak"]
    dev.figures["query_first_answer_at_zero_s"] = round(query_took, 3)
    assert took is not None, "hello did not pass 8 ready replicas within 30 s"
    assert got["query_ready_before"] == 0
    assert got["query_status"] == 200
    assert query_took <= 2.0, f"query's first answer took {query_took:.2f}s"
    assert failures(got["answers"]) == []


def test_edit_of_hello_under_load_serves_the_new_revision(dev: Dev) -> None:
    """--watch: an edit of hello, with 10 clients calling, is served by hello-00002 soon after
    it is ready; no request fails."""
    main = dev.project / "functions" / "hello" / "main.py"

    async def scenario() -> tuple[float, float | None, list[Answer]]:
        stop = asyncio.Event()
        task = asyncio.create_task(load(dev, HELLO, "/?sleep=20", 10, stop))
        await asyncio.sleep(2)
        written = time.monotonic()
        main.write_text(main.read_text() + "\n# an edit makes a new revision\n")
        ready = await poll_until(
            dev, lambda s: revision_of(s, "hello", "hello-00002").get("ready_replicas"), 30
        )
        await asyncio.sleep(3)
        stop.set()
        answers = await task
        return written, ready, answers

    written, ready, answers = asyncio.run(scenario())
    new = [a.at for a in answers if a.revision == "hello-00002"]
    assert failures(answers) == []
    assert new, Counter(a.revision for a in answers)
    first = min(new) - written
    dev.figures["edit_to_first_answer_from_new_revision_s"] = round(first, 3)
    dev.figures["edit_to_new_revision_ready_s"] = -1 if ready is None else round(ready, 3)
    dev.figures["answers_during_reload"] = len(answers)
    assert first <= 15, f"hello-00002 first answered {first:.2f}s after the edit"
    assert answers[-1].revision == "hello-00002"
