"""`knfn invoke` as a user runs it, against `knfn dev` run as a subprocess on a small project:
hello (the repository's function) and a broker whose one trigger sends every event to a
recording HTTP server run by the test (a subscriber by `uri`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from knfn.eventing.cloudevent import Event, from_http
from tests.support import REPO, free_port, http_server_thread

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow

# Not UTF-8, not JSON: it must arrive byte for byte in both modes (base64 in structured mode).
PAYLOAD = b"\x89PNG\r\n\x1a\n\x00\xff\xfe knfn \x00"
# Needs percent-encoding in a ce- header: '%', '"', spaces and non-ASCII.
NOTE = '50% off, "quoted" café ✓'


def manifests(subscriber: str) -> str:
    return f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: hello, namespace: default}}
spec:
  template:
    spec:
      containers:
        - image: knfn/hello
          env:
            - {{name: FUNCTION_TARGET, value: hello}}
            - {{name: FUNCTION_SIGNATURE_TYPE, value: http}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: everything, namespace: default}}
spec:
  broker: default
  subscriber: {{uri: '{subscriber}'}}
"""


@dataclass
class Recorder:
    """A real HTTP server recording every delivery as the event it carries; answers 204."""

    port: int = field(default_factory=free_port)
    received: list[Event] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(from_http(request.headers, await request.read()))
        return web.Response(status=204)

    def wait_for(self, event_id: str, timeout: float = 30) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.received if e.id == event_id]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"event {event_id} was not delivered within {timeout}s")


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with http_server_thread(rec.handle, rec.port):
        yield rec


@dataclass(frozen=True)
class Dev:
    project: Path
    env: dict[str, str]  # KNFN_PORT set: `knfn invoke` finds the gateway by it

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KNFN, "invoke", *args],
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Dev]:
    project = tmp_path_factory.mktemp("invoke")
    base = project / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [invoke.yaml]\n")
    (base / "invoke.yaml").write_text(manifests(f"http://127.0.0.1:{recorder.port}/"))
    ignore = shutil.ignore_patterns("tests", "__pycache__")
    shutil.copytree(REPO / "functions" / "hello", project / "functions" / "hello", ignore=ignore)
    (project / "payload.bin").write_bytes(PAYLOAD)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    port = free_port()
    env.update(KNFN_PG_PORT=str(free_port()), KNFN_S3_PORT=str(free_port()))
    env.update(KNFN_PORT=str(port), KNFN_ADMIN_PORT=str(free_port()))
    log = project / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(project), "dev"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while b"ready; Ctrl-C" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "knfn dev not ready"
        time.sleep(0.1)
    yield Dev(project, env)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_http_call_to_hello_prints_status_headers_and_json(dev: Dev) -> None:
    """`knfn invoke hello`: 200, its headers, and the JSON body (indented) naming the revision."""
    done = dev.invoke("hello", "--path", "/?sleep=1")
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition("\n\n")
    assert head.splitlines()[0] == "HTTP/1.1 200 OK"
    assert "Content-Type: application/json" in head.splitlines()
    assert json.loads(body)["revision"] == "hello-00001"
    assert '\n  "revision": "hello-00001"' in body


def test_quiet_prints_the_body_only_and_urls_work(dev: Dev) -> None:
    """-q with the Service's in-cluster URL: just the body, which JSON tools can read."""
    done = dev.invoke("-q", "http://hello.default.svc.cluster.local/?sleep=1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["slept_ms"] >= 1


def test_binary_event_reaches_the_subscriber_unchanged(dev: Dev, recorder: Recorder) -> None:
    """--event (binary mode) to broker:default: 202, then the subscriber gets the same
    attributes (an extension that needs percent-encoding too) and the file's bytes."""
    done = dev.invoke(
        "broker:default", "--event", "--type", "dev.knfn.invoke", "--source", "/tests/invoke",
        "--id", "binary-1", "--subject", "payload.bin", "--extension", f"note={NOTE}",
        "--data", "@payload.bin",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("HTTP/1.1 202 Accepted\n")
    got = recorder.wait_for("binary-1")
    assert got.data == PAYLOAD
    assert {k: got.attributes.get(k) for k in ("type", "source", "subject", "note")} == {
        "type": "dev.knfn.invoke",
        "source": "/tests/invoke",
        "subject": "payload.bin",
        "note": NOTE,
    }
    assert got.datacontenttype == "application/octet-stream"
    assert "knativearrivaltime" in got.attributes


def test_structured_event_reaches_the_subscriber_unchanged(dev: Dev, recorder: Recorder) -> None:
    """--structured with the broker's full URL: the bytes travel as data_base64 and arrive as
    they were; the text data of a second event stays text."""
    url = "http://broker-ingress.knative-eventing.svc.cluster.local/default/default"
    done = dev.invoke(
        url, "--event", "--structured", "--type", "dev.knfn.invoke", "--source", "/tests",
        "--id", "structured-1", "--extension", f"note={NOTE}", "--data", "@payload.bin",
        "--content-type", "image/png",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    got = recorder.wait_for("structured-1")
    assert (got.data, got.datacontenttype, got.attributes["note"]) == (
        PAYLOAD,
        "image/png",
        NOTE,
    )
    done = dev.invoke(
        "broker:default/default", "--event", "--structured", "--type", "t", "--source", "/s",
        "--id", "structured-2", "--data", "plain text, not JSON",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    got = recorder.wait_for("structured-2")
    assert got.data == b"plain text, not JSON"
    assert got.datacontenttype == "text/plain; charset=utf-8"


def test_invalid_event_exits_1_and_shows_the_400(dev: Dev, recorder: Recorder) -> None:
    """--type '': the broker refuses it; exit code 1 and its JSON error printed."""
    done = dev.invoke(
        "broker:default", "--event", "--type", "", "--source", "/s", "--id", "invalid-1"
    )
    assert done.returncode == 1
    head, _, body = done.stdout.partition("\n\n")
    assert head.startswith("HTTP/1.1 400 ")
    assert "attribute 'type' must not be empty" in json.loads(body)["error"]
    time.sleep(0.3)
    assert all(e.id != "invalid-1" for e in recorder.received)


def test_usage_errors_exit_2_and_unreachable_gateway_exits_1(dev: Dev) -> None:
    """A missing --type is a usage error (2); a port nobody listens on is an error (1)."""
    done = dev.invoke("broker:default", "--event", "--source", "/s")
    assert done.returncode == 2
    assert "--type is required with --event" in done.stderr
    done = dev.invoke("hello", "--port", str(free_port()))
    assert done.returncode == 1
    assert "nothing answers at 127.0.0.1:" in done.stderr
