"""Knative Serving behaviour of `knfn dev --watch`, run as a subprocess on a small project.

The project holds three Services: hello (the repository's autoscaling demo), limited (the same
code with containerConcurrency 1, max-scale 1, target-burst-capacity 0 and timeoutSeconds 1)
and caller (a function that calls hello by its in-cluster URL). Autoscaler windows are shortened
with the documented local-only KNFN_AUTOSCALER_* settings. The tests run in order against one
knfn process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import REPO, admin_status, free_port, revisions_of

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow

CALLER = '''\
"""Calls hello by its in-cluster URL, exactly as it would in the cluster."""

import flask
import functions_framework
import requests


@functions_framework.http
def caller(request: flask.Request) -> flask.Response:
    answer = requests.get("http://hello.default.svc.cluster.local/?sleep=1", timeout=10)
    return flask.Response(answer.content, status=answer.status_code, mimetype="application/json")
'''


def service(
    name: str, target: str, spec: tuple[str, ...] = (), annotations: str = "", top: str = ""
) -> str:
    """A Knative Service running functions/<name> with FUNCTION_TARGET target."""
    template = [
        "template:",
        "  metadata:",
        f'    annotations: {{autoscaling.knative.dev/target: "10"{annotations}}}',
        "  spec:",
        *(f"    {line}" for line in spec),
        "    containers:",
        f"      - image: knfn/{name}",
        "        env:",
        f"          - {{name: FUNCTION_TARGET, value: {target}}}",
        "          - {name: FUNCTION_SIGNATURE_TYPE, value: http}",
    ]
    head = [
        "apiVersion: serving.knative.dev/v1",
        "kind: Service",
        f"metadata: {{name: {name}, namespace: default}}",
        "spec:",
    ]
    body = textwrap.indent(top + "\n".join(template), "  ")
    return "\n".join(head) + "\n" + body + "\n"


def write_services(project: Path, hello_top: str = "") -> None:
    docs = [
        service("hello", "hello", top=hello_top),
        service(
            "limited",
            "hello",
            spec=("containerConcurrency: 1", "timeoutSeconds: 1"),
            # TBC 0: with its replica up, the activator leaves the path (kpa.go), so
            # queue-proxy's 10 x CC queue and its 503 apply.
            annotations=', autoscaling.knative.dev/max-scale: "1", '
            'autoscaling.knative.dev/target-burst-capacity: "0"',
        ),
        service("caller", "caller"),
    ]
    (project / "knative" / "base" / "services.yaml").write_text("---\n".join(docs))


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    project: Path
    log: Path

    def status(self) -> dict[str, Any]:
        return admin_status(self.admin_port)

    def revisions(self, service: str) -> dict[str, dict[str, Any]]:
        return revisions_of(self.admin_port, service)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    project = tmp_path_factory.mktemp("project")
    (project / "knative" / "base").mkdir(parents=True)
    (project / "knative" / "base" / "kustomization.yaml").write_text("resources: [services.yaml]\n")
    ignore = shutil.ignore_patterns("tests", "__pycache__")
    for name in ("hello", "limited"):
        shutil.copytree(REPO / "functions" / "hello", project / "functions" / name, ignore=ignore)
    (project / "functions" / "caller").mkdir(parents=True)
    (project / "functions" / "caller" / "main.py").write_text(CALLER)
    write_services(project)
    port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    env.update(
        KNFN_PG_PORT=str(free_port()),
        KNFN_S3_PORT=str(free_port()),
        KNFN_AUTOSCALER_STABLE_WINDOW="2s",
        KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE="0s",
        KNFN_AUTOSCALER_TICK="500ms",
        KNFN_MAX_REPLICAS_PER_REVISION="4",
    )
    log = project / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(project), "dev", "--watch",
             "--port", str(port), "--admin-port", str(admin_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    running = Dev(proc, port, admin_port, project, log)
    running.wait_for("ready", lambda: b"ready; Ctrl-C" in log.read_bytes(), timeout=120)
    yield running
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


async def load(
    dev: Dev, host: str, path: str, clients: int, seconds: float | None = None, each: int = 0
) -> list[tuple[int, bytes]]:
    """clients concurrent loops of requests, for a duration or `each` requests per client."""
    results: list[tuple[int, bytes]] = []
    end = time.monotonic() + (seconds or 1e9)
    url = f"http://127.0.0.1:{dev.port}{path}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def loop() -> None:
            sent = 0
            while time.monotonic() < end and (not each or sent < each):
                sent += 1
                async with session.get(url, headers={"Host": host}) as resp:
                    results.append((resp.status, await resp.read()))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return results


def revision_of(body: bytes) -> str:
    return str(json.loads(body)["revision"])


def test_first_request_to_a_revision_at_zero_gets_200(dev: Dev) -> None:
    """hello scales to zero when idle; the next request is held, hello starts, and it answers."""
    dev.wait_for(
        "hello at zero", lambda: dev.revisions("hello")["hello-00001"]["ready_replicas"] == 0
    )
    [(status, body)] = asyncio.run(load(dev, "hello.default", "/?sleep=1", 1, each=1))
    assert status == 200 and revision_of(body) == "hello-00001"


def test_load_scales_out_and_back_to_zero(dev: Dev) -> None:
    """30 concurrent 200 ms requests for 20 s reach at least 3 ready replicas, stopped at the
    per-revision cap of 4 (shown in /status), then back to zero."""
    peak = 0
    capped: set[str] = set()

    async def watch_and_load() -> list[tuple[int, bytes]]:
        nonlocal peak
        task = asyncio.create_task(load(dev, "hello.default", "/?sleep=200", 30, seconds=20))
        while not task.done():
            status = await asyncio.to_thread(dev.status)
            hello = next(s for s in status["services"] if s["name"] == "hello")
            peak = max(peak, hello["revisions"][0]["ready_replicas"])
            capped.update(status["replicas"]["capped"])
            await asyncio.sleep(0.5)
        return await task

    results = asyncio.run(watch_and_load())
    assert Counter(s for s, _ in results) == Counter({200: len(results)})
    assert 3 <= peak <= 4, f"peak ready replicas {peak}"
    assert "hello-00001" in capped
    dev.wait_for(
        "scale to zero",
        lambda: dev.revisions("hello")["hello-00001"]["ready_replicas"] == 0,
        timeout=30,
    )


def test_queue_full_gets_503_and_timeout_gets_504(dev: Dev) -> None:
    """CC 1, max-scale 1: past 1 in flight + 10 queued comes 503; a 2 s request with
    timeoutSeconds 1 gets 504."""
    warm = asyncio.run(load(dev, "limited.default", "/?sleep=1", 1, each=1))
    assert warm[0][0] == 200
    burst = asyncio.run(load(dev, "limited.default", "/?sleep=40", 16, each=1))
    statuses = Counter(s for s, _ in burst)
    assert statuses[503] >= 1 and statuses[200] >= 10 and statuses.total() == 16, statuses
    slow = asyncio.run(load(dev, "limited.default", "/?sleep=2000", 1, each=1))
    assert slow[0][0] == 504 and b"timeoutSeconds (1s) ran out" in slow[0][1]


def test_function_calls_another_by_its_cluster_url(dev: Dev) -> None:
    """caller reaches http://hello.default.svc.cluster.local through HTTP_PROXY, unchanged."""
    [(status, body)] = asyncio.run(load(dev, "caller.default", "/", 1, each=1))
    assert status == 200, body
    assert revision_of(body).startswith("hello-")


def test_code_change_under_load_moves_to_a_new_revision_without_failures(dev: Dev) -> None:
    """--watch: hello's code changes under concurrency 10; hello-00002 serves; nothing fails."""
    main = dev.project / "functions" / "hello" / "main.py"

    async def change_during_load() -> list[tuple[int, bytes]]:
        task = asyncio.create_task(load(dev, "hello.default", "/?sleep=20", 10, seconds=12))
        await asyncio.sleep(2)
        main.write_text(main.read_text() + "\n# a change makes a new revision\n")
        return await task

    results = asyncio.run(change_during_load())
    assert [s for s, _ in results if s != 200] == []
    served = Counter(revision_of(b) for _, b in results)
    assert served["hello-00001"] > 0 and served["hello-00002"] > 0, served
    assert revision_of(results[-1][1]) == "hello-00002"


def test_traffic_split_and_tag(dev: Dev) -> None:
    """80/20 between the two revisions over 1,000 requests within 5 points; the tag host
    reaches the tagged revision."""
    write_services(
        dev.project,
        hello_top=textwrap.dedent(
            """\
            traffic:
              - {revisionName: hello-00001, percent: 80}
              - {latestRevision: true, percent: 20, tag: candidate}
            """
        ),
    )
    dev.wait_for(
        "the split",
        lambda: dev.revisions("hello").get("hello-00001", {}).get("traffic_percent") == 80,
    )
    results = asyncio.run(load(dev, "hello.default", "/?sleep=1", 10, each=100))
    served = Counter(revision_of(b) for s, b in results if s == 200)
    assert sum(served.values()) >= 1000
    share = served["hello-00001"] / sum(served.values())
    assert 0.75 <= share <= 0.85, served
    tagged = asyncio.run(load(dev, "candidate-hello.default", "/", 1, each=5))
    assert {revision_of(b) for _, b in tagged} == {"hello-00002"}


def test_sigterm_to_a_replica_lets_its_in_flight_requests_finish(dev: Dev) -> None:
    """A replica told to stop (SIGTERM) under load completes the requests it holds."""

    async def kill_during_load() -> list[tuple[int, bytes]]:
        task = asyncio.create_task(load(dev, "limited.default", "/?sleep=600", 1, each=1))
        await asyncio.sleep(0.3)
        rev = next(iter((await asyncio.to_thread(dev.revisions, "limited")).values()))
        for replica in rev["replicas"]:
            os.kill(replica["pid"], signal.SIGTERM)
        return await task

    [(status, body)] = asyncio.run(kill_during_load())
    assert status == 200, body


def test_crashed_replica_gives_502_and_is_replaced(dev: Dev) -> None:
    """kill -9 of a replica: its in-flight request gets 502; a new replica serves the next."""

    async def crash_during_load() -> list[tuple[int, bytes]]:
        task = asyncio.create_task(load(dev, "limited.default", "/?sleep=800", 1, each=1))
        # Kill once the request is in flight on the replica (a request the replica refused
        # before it got there would go to the next replica instead).
        for _ in range(100):
            await asyncio.sleep(0.02)
            rev = next(iter((await asyncio.to_thread(dev.revisions, "limited")).values()))
            if any(replica["in_flight"] for replica in rev["replicas"]):
                break
        await asyncio.sleep(0.1)
        for replica in rev["replicas"]:
            os.kill(replica["pid"], signal.SIGKILL)
        return await task

    [(status, body)] = asyncio.run(crash_during_load())
    assert status == 502 and b"limited-00001 failed" in body, body
    crashed = time.monotonic()
    dev.wait_for(
        "a replacement replica",
        lambda: dev.revisions("limited")["limited-00001"]["ready_replicas"] == 1,
        timeout=30,
    )
    [(after, _)] = asyncio.run(load(dev, "limited.default", "/?sleep=1", 1, each=1))
    assert after == 200
    print(f"replica kill -9: 1 x 502, a ready replacement {time.monotonic() - crashed:.2f}s later")


def test_metrics_and_status_command(dev: Dev) -> None:
    """/metrics counts requests and cold starts; `knfn status` prints the revisions."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{dev.admin_port}/metrics") as resp:
        text = resp.read().decode()
    assert 'knfn_requests_total{code="200",namespace="default",revision="hello-00001"' in text
    assert 'knfn_cold_starts_total{namespace="default",revision="hello-00001"' in text
    assert "knfn_request_duration_seconds_bucket" in text
    env = {**os.environ, "KNFN_ADMIN_PORT": str(dev.admin_port)}
    table = subprocess.run([KNFN, "status"], env=env, capture_output=True, text=True, check=True)
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["SERVICE", "REVISION", "TRAFFIC"]
    assert any(line.split()[:3] == ["hello.default", "hello-00001", "80%"] for line in lines)
    raw = subprocess.run([KNFN, "status", "--json"], env=env, capture_output=True, check=True)
    assert {s["name"] for s in json.loads(raw.stdout)["services"]} == {"hello", "limited", "caller"}
