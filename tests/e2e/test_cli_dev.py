"""`knfn dev` as a user runs it: the whole system from the repository's manifests."""

from __future__ import annotations

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
from pathlib import Path

import pytest

from knfn.backing import process
from tests.support import REPO, free_port

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow


class Dev:
    def __init__(self, proc: subprocess.Popen[str], port: int, admin_port: int, log: Path) -> None:
        self.proc, self.port, self.admin_port, self.log = proc, port, admin_port, log

    def get(self, host: str, path: str = "/") -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host})
        return _open(req, None)

    def via_proxy(self, url: str) -> tuple[int, bytes]:
        proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{self.port}"})
        return _open(urllib.request.Request(url), proxy)


def _open(req: urllib.request.Request, handler: object) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(*([handler] if handler else []))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`knfn dev` on free ports with its state in a temporary project copy of the manifests."""
    state = tmp_path_factory.mktemp("dev")
    port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    env.update(
        KNFN_PORT=str(port),
        KNFN_ADMIN_PORT=str(admin_port),
        KNFN_PG_PORT=str(free_port()),
        KNFN_S3_PORT=str(free_port()),
        KNFN_STATE_DIR=str(state / ".knfn"),
    )
    log = state / "dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(REPO), "dev"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while "ready; Ctrl-C stops everything" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield Dev(proc, port, admin_port, log)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def test_hello_answers_at_its_knative_host(dev: Dev) -> None:
    """hello answers at hello.default.localhost, naming its revision."""
    status, body = dev.get(f"hello.default.localhost:{dev.port}", "/?sleep=5")
    assert status == 200, body
    assert b"hello-00001" in body


def test_absolute_form_proxy_request_reaches_query(dev: Dev) -> None:
    """A request for query's in-cluster URL, sent through the gateway as a proxy, reaches it."""
    status, body = dev.via_proxy("http://query.default.svc.cluster.local/objects")
    assert status == 200, body
    assert "items" in json.loads(body) or isinstance(json.loads(body), dict)


def test_unknown_host_gets_404_listing_services(dev: Dev) -> None:
    """An unknown host is not proxied anywhere: 404 with the known Services."""
    status, body = dev.get("example.com")
    assert status == 404
    listed = json.loads(body)["services"]
    assert "hello.default" in listed and "query.default" in listed


def test_pipeline_image_to_query_with_thumbnail(dev: Dev) -> None:
    """A PNG posted to ingest shows in query with its thumbnail key within 5 s; event-display
    logged both events; /events lists each delivery."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 200), (10, 120, 200)).save(buf, "PNG")
    req = urllib.request.Request(
        f"http://127.0.0.1:{dev.port}/",
        data=buf.getvalue(),
        headers={"Host": "ingest.default", "Content-Type": "image/png"},
        method="POST",
    )
    status, body = _open(req, None)
    assert status == 201, body
    key = json.loads(body)["key"]
    deadline = time.monotonic() + 5
    thumbnail = None
    while thumbnail is None:
        assert time.monotonic() < deadline, "no thumbnail key in query within 5 s"
        status, body = dev.get("query.default", f"/objects/{key}")
        if status == 200:
            thumbnail = json.loads(body).get("thumbnail_key")
        time.sleep(0.1)
    assert thumbnail.startswith("thumbnails/")
    log = dev.log.read_text()
    displayed = [line for line in log.splitlines() if line.startswith("event-display/")]
    assert any("dev.knfn.object.stored" in line for line in displayed)
    deadline = time.monotonic() + 5
    while not any("dev.knfn.thumbnail.created" in line for line in displayed):
        assert time.monotonic() < deadline, "event-display did not log the reply event"
        time.sleep(0.1)
        displayed = [
            ln for ln in dev.log.read_text().splitlines() if ln.startswith("event-display/")
        ]
    with urllib.request.urlopen(f"http://127.0.0.1:{dev.admin_port}/events?limit=50") as resp:
        deliveries = json.loads(resp.read())["events"]
    triggers = {(d["type"], d["trigger"]) for d in deliveries if d["state"] == "delivered"}
    assert {
        ("dev.knfn.object.stored", "thumbnail-object-stored"),
        ("dev.knfn.object.stored", "catalog-object-stored"),
        ("dev.knfn.thumbnail.created", "catalog-thumbnail-created"),
        ("dev.knfn.object.stored", "event-display-all"),
    } <= triggers


def test_http_faces_refuse_bad_requests_in_json(dev: Dev) -> None:
    """Admin API: Host evil.example 421, its own address served; both faces: garbage 400, an
    oversized header 431, each with a JSON error."""
    admin = f"http://127.0.0.1:{dev.admin_port}/status"
    status, body = _open(urllib.request.Request(admin, headers={"Host": "evil.example"}), None)
    assert status == 421 and json.loads(body)["host"] == "evil.example"
    status, body = _open(urllib.request.Request(admin), None)  # Host: 127.0.0.1:PORT
    assert status == 200 and "services" in json.loads(body)
    for port in (dev.port, dev.admin_port):
        for raw, expected in (
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(raw)
                answer = conn.makefile("rb").read()
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.split()[1] == str(expected).encode(), answer
            assert "error" in json.loads(payload)


def test_sigterm_stops_every_process_it_started(dev: Dev) -> None:
    """SIGTERM: knfn exits 0 and no replica or backing server it started is left."""
    text = dev.log.read_text()
    # Replicas and the backing servers are all direct children of knfn.
    status = subprocess.run(
        ["pgrep", "-P", str(dev.proc.pid)], capture_output=True, text=True, check=False
    )
    children = [int(p) for p in status.stdout.split()]
    dev.proc.send_signal(signal.SIGTERM)
    assert dev.proc.wait(60) == 0, dev.log.read_text()
    assert "stopped" in dev.log.read_text().splitlines()[-1]
    assert "started postgres" in text
    assert len(children) >= 3
    assert not [pid for pid in children if process.is_running(pid)]
