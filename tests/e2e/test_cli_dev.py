"""`knfn dev` as a user runs it: the whole system from the repository's manifests."""

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

import pytest

from knfn.backing import process
from tests.support import DevRun, knfn_dev, listening_sockets

pytestmark = pytest.mark.slow


class Dev:
    def __init__(self, run: DevRun) -> None:
        self.proc, self.port, self.admin_port, self.log = (
            run.proc,
            run.port,
            run.admin_port,
            run.log,
        )
        self.state = run.state

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
    """`knfn dev` on free ports with its state in a temporary directory."""
    with knfn_dev(tmp_path_factory.mktemp("dev")) as run:
        yield Dev(run)


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


def _process_tree(roots: set[int]) -> set[int]:
    """The roots and every process descending from one of them (parents from /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # gone meanwhile
            continue
        if stat:
            # The command name may hold spaces and parentheses; the fields after it do not.
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def _listeners(pids: set[int]) -> set[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket these processes hold."""
    sockets = listening_sockets()
    found = set()
    for pid in pids:
        try:
            targets = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:  # gone meanwhile
            continue
        for target in targets:
            if target.startswith("socket:[") and int(target[8:-1]) in sockets:
                found.add((pid, *sockets[int(target[8:-1])]))
    return found


def test_every_listening_socket_is_on_loopback(dev: Dev) -> None:
    """Every TCP socket that knfn, its replicas (template forks and their gunicorn workers),
    Postgres and SeaweedFS listen on is bound to 127.0.0.1 or ::1. The backing servers run in
    their own sessions, so their pids come from services.json."""
    assert dev.get(f"hello.default.localhost:{dev.port}")[0] == 200  # a replica is up
    backing = json.loads((dev.state / "services.json").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{dev.admin_port}/status", timeout=10) as resp:
        services = json.loads(resp.read())["services"]
    names = {int(rec["pid"]): name for name, rec in backing.items()} | {dev.proc.pid: "knfn"}
    pids = _process_tree(set(names))
    replicas = {
        int(r["url"].rsplit(":", 1)[1]): f"{svc['name']} replica"
        for svc in services
        for rev in svc["revisions"]
        for r in rev["replicas"]
    }
    found = _listeners(pids)
    # A server's child processes (Postgres backends, gunicorn workers) hold its socket too.
    seen = sorted(
        {
            (names.get(pid) or replicas.get(port, "other"), address, port)
            for pid, address, port in found
        }
    )
    print(f"{len(pids)} processes, {len(seen)} listening sockets:", *seen, sep="\n  ")
    assert {"knfn", "postgres", "s3"} <= {name for name, _, _ in seen}
    assert {dev.port, dev.admin_port} <= {port for name, _, port in seen if name == "knfn"}
    assert len({name for name, _, _ in seen if name.endswith(" replica")}) >= 4
    assert [s for s in seen if s[1] not in ("127.0.0.1", "::1")] == []


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
