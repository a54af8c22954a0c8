"""Watching a running `knfn dev`: the KPA's state in /status and under Knative's metric names,
the log files with `knfn logs`, which lines `knfn dev` prints, and `knfn events`."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import KNFN, REPO, DevRun, knfn_dev, post_events, request, stop_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    """`knfn dev` with the default printing."""
    with knfn_dev(tmp_path_factory.mktemp("observe")) as run:
        yield run


def get_json(dev: DevRun, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{dev.admin_port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def hello_revision(dev: DevRun) -> dict[str, Any]:
    [svc] = [s for s in get_json(dev, "/status")["services"] if s["name"] == "hello"]
    found: dict[str, Any] = svc["revisions"][0]
    return found


def knative_metrics(dev: DevRun, revision: str) -> dict[str, float]:
    """The autoscaler_* samples of revision, and its knfn cold-start count."""
    url = f"http://127.0.0.1:{dev.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("revision_name") == revision or (
                sample.name == "knfn_cold_starts_total" and labels.get("revision") == revision
            ):
                found[sample.name] = sample.value
    return found


def knfn(dev: DevRun, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KNFN, "--project-dir", str(REPO), *args],
        env=dict(dev.env), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def hello(dev: DevRun) -> None:
    status, _, body = request(dev.port, "GET", "/", host=f"hello.default.localhost:{dev.port}")
    assert status == 200, body


def post_event(dev: DevRun, event_id: str) -> None:
    attrs = {"specversion": "1.0", "id": event_id, "source": "/e2e/observe", "type": "e2e.seen"}
    assert asyncio.run(post_events(dev.port, [attrs])) == [202]


class Lines:
    """A subprocess's stdout lines, read on a thread so the test can wait with a timeout."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not printed within {timeout}s: {self.seen[-20:]}"
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> None:
        stop_process(self.proc)  # type: ignore[arg-type]


# ---- the KPA's insides -----------------------------------------------------------------------


def test_metrics_carry_the_status_values_under_knatives_names(dev: DevRun) -> None:
    """For hello's revision, serving, the autoscaler_* gauges equal /status's autoscaler object
    (read between two equal /status answers, so no decision fell in between)."""
    hello(dev)
    for _ in range(50):
        before = hello_revision(dev)
        samples = knative_metrics(dev, before["name"])
        after = hello_revision(dev)
        if (
            before["autoscaler"] == after["autoscaler"]
            and before["desired_replicas"] == (after["desired_replicas"])
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the status of hello never held still between two reads")
    auto = before["autoscaler"]
    print(f"hello autoscaler: {auto}; cold starts {before['cold_starts']}")
    assert auto["metric"] == "concurrency" and auto["ready_pods"] >= 1
    assert samples["autoscaler_desired_pods"] == auto["desired_pods"]
    assert samples["autoscaler_actual_pods"] == auto["ready_pods"] == before["ready_replicas"]
    assert samples["autoscaler_requested_pods"] == before["desired_replicas"]
    assert samples["autoscaler_stable_request_concurrency"] == auto["stable_value"]
    assert samples["autoscaler_panic_request_concurrency"] == auto["panic_value"]
    assert samples["autoscaler_target_concurrency_per_pod"] == auto["target"]
    assert samples["autoscaler_excess_burst_capacity"] == auto["excess_burst_capacity"]
    assert samples["autoscaler_panic_mode"] == (1.0 if auto["panic_mode"] else 0.0)
    assert (auto["panic_since"] is None) is (not auto["panic_mode"])
    assert auto["activator_in_path"] is (auto["excess_burst_capacity"] < 0)
    assert samples.get("knfn_cold_starts_total", 0.0) == before["cold_starts"]


# ---- logs -------------------------------------------------------------------------------------


def test_knfn_logs_shows_event_displays_line_for_a_posted_event(dev: DevRun) -> None:
    """An event posted to the broker reaches event-display, whose line `knfn logs` prints."""
    event_id = f"logs-{uuid.uuid4()}"
    post_event(dev, event_id)
    found = wait_logged(dev, event_id)
    assert found[0].startswith("event-display/event-display-00001/")
    record = json.loads(found[0].split(" | ", 1)[1])
    assert record["ce_id"] == event_id and record["ce_type"] == "e2e.seen"
    last = knfn(dev, "logs", "event-display", "-n", "1", "--revision", "event-display-00001")
    assert len(last.stdout.splitlines()) == 1


def wait_logged(dev: DevRun, event_id: str) -> list[str]:
    """`knfn logs event-display` until it shows event_id's line; those lines. Until
    event-display has printed its first line it has no log, which `knfn logs` reports."""
    deadline = time.monotonic() + 20
    while True:
        done = knfn(dev, "logs", "event-display")
        if done.returncode != 0:
            assert "no log of Service 'event-display'" in done.stderr, done.stderr
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.3)
            continue
        found = [ln for ln in done.stdout.splitlines() if event_id in ln]
        if found:
            return found
        assert time.monotonic() < deadline, done.stdout[-2000:]
        time.sleep(0.3)


def test_knfn_logs_follow_prints_a_new_event(dev: DevRun) -> None:
    """`knfn logs -f -n 3` prints the last lines, then an event posted after it shows up (3, not
    1: the heartbeat PingSource's minutely event may land after the first one)."""
    first = f"before-{uuid.uuid4()}"
    post_event(dev, first)
    wait_logged(dev, first)
    follower = Lines(
        [KNFN, "--project-dir", str(REPO), "logs", "event-display", "-f", "-n", "3"], dict(dev.env)
    )
    try:
        follower.wait_for(first)  # it has read the file to its end
        event_id = f"follow-{uuid.uuid4()}"
        post_event(dev, event_id)
        follower.wait_for(event_id)
        assert follower.proc.poll() is None  # still following
    finally:
        follower.stop()


def test_knfn_logs_for_an_unknown_service_names_the_file(dev: DevRun) -> None:
    done = knfn(dev, "logs", "no-such-service")
    assert done.returncode == 1
    assert "no-such-service.log" in done.stderr and "Services with logs:" in done.stderr


def test_default_printing_shows_event_display_not_hello(dev: DevRun) -> None:
    """knfn dev prints event-display's lines by default and not hello's, which still go to
    hello's log file."""
    for _ in range(3):
        hello(dev)
    post_event(dev, f"print-{uuid.uuid4()}")
    hello_log = dev.state / "logs" / "services" / "hello.log"
    deadline = time.monotonic() + 10
    while '"message": "hello"' not in (hello_log.read_text() if hello_log.exists() else ""):
        assert time.monotonic() < deadline, "hello's lines never reached hello.log"
        time.sleep(0.2)
    printed = dev.log.read_text()
    assert "printing knfn's lines and the lines of event-display" in printed
    assert any(ln.startswith("event-display/") for ln in printed.splitlines())
    assert not any(ln.startswith("hello/") for ln in printed.splitlines())
    assert (dev.state / "logs" / "knfn.log").read_text().count("ready; Ctrl-C") == 1


def test_print_hello_prints_hellos_lines(tmp_path: Path) -> None:
    """--print hello (here KNFN_PRINT=hello): hello's lines reach the terminal."""
    with knfn_dev(tmp_path, extra_env={"KNFN_PRINT": "hello"}) as run:
        hello(run)
        deadline = time.monotonic() + 10
        while not any(ln.startswith("hello/") for ln in run.log.read_text().splitlines()):
            assert time.monotonic() < deadline, run.log.read_text()[-2000:]
            time.sleep(0.2)
        assert "printing knfn's lines and the lines of hello" in run.log.read_text()


# ---- events -----------------------------------------------------------------------------------


def test_knfn_events_prints_a_line_for_a_posted_event(dev: DevRun) -> None:
    """A posted event's delivery to event-display is one line of `knfn events`."""
    event_id = f"events-{uuid.uuid4()}"
    post_event(dev, event_id)
    deadline = time.monotonic() + 20
    while True:
        done = knfn(dev, "events", "--limit", "100")
        assert done.returncode == 0, done.stderr
        lines = [ln for ln in done.stdout.splitlines() if event_id in ln and "delivered" in ln]
        if lines:
            break
        assert time.monotonic() < deadline, done.stdout[-2000:]
        time.sleep(0.3)
    assert done.stdout.splitlines()[0].split()[:3] == ["TIME", "EVENT", "TYPE"]
    assert any("event-display-all" in ln and "e2e.seen" in ln for ln in lines)


def test_knfn_events_follow_prints_deliveries_as_they_happen(dev: DevRun) -> None:
    """`knfn events -f` prints an event posted after it started."""
    follower = Lines([KNFN, "events", "-f", "--limit", "1"], dict(dev.env))
    try:
        follower.wait_for("TIME")
        event_id = f"events-f-{uuid.uuid4()}"
        post_event(dev, event_id)
        line = follower.wait_for(event_id)
        assert "e2e.seen" in line
    finally:
        follower.stop()
