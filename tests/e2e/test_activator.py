"""The activator in the request path, and the request timeouts, on `knfn dev` run as a subprocess.

A small project: the repository's hello function under four Services, each with
containerConcurrency 1 and exactly one replica (min- and max-scale 1), since what is tested is
per revision:

- ``buffered``: the default target-burst-capacity (211). One replica carries 1, so the excess
  burst capacity is 1 - 211 < 0 and the activator stays in the path: 14 requests at once all
  get 200, as on Knative (knative/serving pkg/activator/net/throttler.go).
- ``direct``: target-burst-capacity 0, so with its replica up the activator leaves the path and
  the replica's queue-proxy admits 1 + 10 x CC: of 14 requests at once, 3 get 503
  (pkg/queue/sharedmain/main.go, pkg/queue/breaker.go).
- ``slow``: responseStartTimeoutSeconds 2 (timeoutSeconds 30). Two 1.2 s requests at once: the
  second waits for the slot, and its response-start clock runs from its arrival, as in
  Knative's activator, so it gets a 504 naming responseStartTimeoutSeconds.
- ``short``: timeoutSeconds 1: a 2 s request gets a 504 naming timeoutSeconds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import READY_LINE, REPO, DevRun, dev_env, revisions_of, services_down

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow

ONE_REPLICA = 'autoscaling.knative.dev/min-scale: "1", autoscaling.knative.dev/max-scale: "1"'


def service(name: str, annotations: str = "", spec: tuple[str, ...] = ()) -> str:
    """A Knative Service running hello with containerConcurrency 1 and one replica."""
    lines = [
        "apiVersion: serving.knative.dev/v1",
        "kind: Service",
        f"metadata: {{name: {name}, namespace: default}}",
        "spec:",
        "  template:",
        "    metadata:",
        f"      annotations: {{{ONE_REPLICA}{annotations}}}",
        "    spec:",
        "      containerConcurrency: 1",
        *(f"      {line}" for line in spec),
        "      containers:",
        f"        - image: knfn/{name}",
        "          env:",
        "            - {name: FUNCTION_TARGET, value: hello}",
        "            - {name: FUNCTION_SIGNATURE_TYPE, value: http}",
    ]
    return "\n".join(lines) + "\n"


SERVICES = {
    "buffered": service("buffered"),
    "direct": service("direct", ', autoscaling.knative.dev/target-burst-capacity: "0"'),
    "slow": service("slow", spec=("timeoutSeconds: 30", "responseStartTimeoutSeconds: 2")),
    "short": service("short", spec=("timeoutSeconds: 1",)),
}


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    project = tmp_path_factory.mktemp("project")
    base = project / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [services.yaml]\n")
    (base / "services.yaml").write_text("---\n".join(SERVICES.values()))
    ignore = shutil.ignore_patterns("tests", "__pycache__")
    for name in SERVICES:
        shutil.copytree(REPO / "functions" / "hello", project / "functions" / name, ignore=ignore)
    env = dev_env(project / ".knfn")
    log = project / "dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(project), "dev"],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while READY_LINE not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield DevRun(proc, env, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        services_down(env)


def revision(dev: DevRun, name: str) -> dict[str, Any]:
    [rev] = revisions_of(dev.admin_port, name).values()
    return rev


def ready(dev: DevRun, name: str) -> dict[str, Any]:
    """The revision once its one replica is ready and the KPA has ticked with it ready."""
    deadline = time.monotonic() + 60
    while True:
        rev = revision(dev, name)
        if rev["ready_replicas"] == 1 and rev["autoscaler"]["ready_pods"] == 1:
            return rev
        assert dev.proc.poll() is None, dev.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{name} never had its replica ready: {rev}"
        time.sleep(0.2)


async def at_once(dev: DevRun, host: str, path: str, n: int) -> list[tuple[int, bytes, float]]:
    """n requests sent together: (status, body, seconds) each."""
    url = f"http://127.0.0.1:{dev.port}{path}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> tuple[int, bytes, float]:
            started = time.monotonic()
            async with session.get(url, headers={"Host": f"{host}.default"}) as resp:
                return resp.status, await resp.read(), time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(n)))


def metric(dev: DevRun, name: str, revision_name: str) -> float:
    """One sample of /metrics for a revision, by its Knative revision_name label."""
    text = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{dev.admin_port}/metrics"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    label = f'revision_name="{revision_name}"'
    [value] = [
        line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line
    ]
    return float(value)


def test_activator_in_the_path_buffers_fourteen_requests_without_503(dev: DevRun) -> None:
    """Default target-burst-capacity, CC 1, one replica: /status and /metrics say the activator
    is in the path, and 14 requests at once all get 200 (queue-proxy alone would refuse 3)."""
    rev = ready(dev, "buffered")
    assert rev["autoscaler"]["excess_burst_capacity"] < 0
    assert rev["autoscaler"]["activator_in_path"] is True
    assert metric(dev, "knfn_activator_in_path", rev["name"]) == 1.0
    results = asyncio.run(at_once(dev, "buffered", "/?sleep=100", 14))
    statuses = Counter(status for status, _, _ in results)
    print(f"buffered: {dict(statuses)}")
    assert statuses == Counter({200: 14})


def test_target_burst_capacity_zero_sends_requests_straight_to_the_replica(dev: DevRun) -> None:
    """TBC 0 with the replica up: the activator is out of the path, the replica's queue holds
    10 x CC, so of 14 requests at once 11 get 200 and 3 get 503."""
    rev = ready(dev, "direct")
    assert rev["autoscaler"]["excess_burst_capacity"] == 0
    assert rev["autoscaler"]["activator_in_path"] is False
    assert metric(dev, "knfn_activator_in_path", rev["name"]) == 0.0
    results = asyncio.run(at_once(dev, "direct", "/?sleep=300", 14))
    statuses = Counter(status for status, _, _ in results)
    print(f"direct: {dict(statuses)}")
    assert statuses == Counter({200: 11, 503: 3})
    refused = [body for status, body, _ in results if status == 503]
    assert all(b"pending request queue full" in body for body in refused)


def test_response_start_clock_runs_from_arrival(dev: DevRun) -> None:
    """responseStartTimeoutSeconds 2, two 1.2 s requests on one slot: the second waits for the
    slot, its response cannot start within 2 s of its arrival, so it gets a 504 that names
    responseStartTimeoutSeconds (the clock does not wait for the slot)."""
    ready(dev, "slow")
    results = asyncio.run(at_once(dev, "slow", "/?sleep=1200", 2))
    print(f"slow: {[(s, round(t, 2)) for s, _, t in results]}")
    assert Counter(status for status, _, _ in results) == Counter({200: 1, 504: 1})
    [(body, took)] = [(body, took) for status, body, took in results if status == 504]
    assert b"responseStartTimeoutSeconds (2s) ran out" in body
    assert 1.9 < took < 2.4 + 1.0  # at 2 s from arrival, not 2 s after the slot


def test_timeout_seconds_named_when_it_runs_out(dev: DevRun) -> None:
    """timeoutSeconds 1 and a 2 s request: 504 naming timeoutSeconds and its value."""
    ready(dev, "short")
    [(status, body, _)] = asyncio.run(at_once(dev, "short", "/?sleep=2000", 1))
    assert status == 504 and b"timeoutSeconds (1s) ran out" in body, body


def test_knfn_status_shows_whether_the_activator_is_in_the_path(dev: DevRun) -> None:
    """`knfn status` has an ACTIVATOR column: "in path" for buffered, "no" for direct."""
    ready(dev, "buffered")
    ready(dev, "direct")
    out = subprocess.run(
        [KNFN, "status"], env=dict(dev.env), capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout  # fmt: skip
    print(out)
    lines = out.splitlines()
    assert lines[0].split()[-1] == "ACTIVATOR"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["buffered.default"].endswith("in path")
    assert rows["direct.default"].endswith(" no")
