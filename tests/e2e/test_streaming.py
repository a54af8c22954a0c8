"""Streams, upgrades, timeouts, headers and probes through `knfn dev`, run as a subprocess on a
small project of test functions (tests/e2e/streaming_function): as the queue-proxy and the
activator treat them in a cluster (knfn/serving/queue_proxy.py, knfn/gateway.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from tests.support import KNFN, READY_LINE, dev_env, request, services_down, stop_process

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "streaming_function"
SERVICES: dict[str, tuple[str, dict[str, int]]] = {
    # name: (FUNCTION_TARGET, RevisionSpec timeouts)
    "sse": ("sse", {}),
    "ws": ("echo_ws", {}),
    "headers": ("headers", {}),
    "idle": ("sse", {"idleTimeoutSeconds": 2, "timeoutSeconds": 5}),
}


def manifest(name: str, target: str, timeouts: dict[str, int]) -> dict[str, object]:
    env = [
        {"name": "FUNCTION_TARGET", "value": target},
        {"name": "FUNCTION_SIGNATURE_TYPE", "value": "http"},
    ]
    spec = {**timeouts, "containers": [{"image": f"knfn/{name}", "env": env}]}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": spec}},
    }


@dataclass(frozen=True)
class Dev:
    port: int
    project: Path

    def host(self, service: str) -> str:
        return f"{service}.default.localhost:{self.port}"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    project = tmp_path_factory.mktemp("project")
    base = project / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [services.yaml]\n")
    for name in SERVICES:
        shutil.copytree(FIXTURE, project / "functions" / name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    docs = [manifest(name, *spec) for name, spec in SERVICES.items()]
    (base / "services.yaml").write_text(yaml.safe_dump_all(docs))
    env = dev_env(project / ".knfn")
    log = project / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(project), "dev"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while READY_LINE not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield Dev(int(env["KNFN_PORT"]), project)
    finally:
        stop_process(proc, grace=30)  # type: ignore[arg-type]
        services_down(env)


def test_server_sent_events_arrive_one_by_one(dev: Dev, tmp_path: Path) -> None:
    """The first event reaches the client before the function produces the second: the
    function waits for a file the client writes only once it has read the first event."""
    gate = tmp_path / "gate"

    async def run() -> list[bytes]:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            url = f"http://127.0.0.1:{dev.port}/?gate={gate}"
            async with session.get(url, headers={"Host": dev.host("sse")}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 60)
                gate.touch()
                rest = await asyncio.wait_for(resp.content.read(), 60)
                return [first, rest]

    first, rest = asyncio.run(run())
    assert first == b"data: one\n\n"
    assert rest == b"data: two\n\n"


def test_websocket_echo_through_the_gateway(dev: Dev) -> None:
    """A WebSocket handshake reaches the function as an upgrade; messages go both ways."""

    async def run() -> list[object]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{dev.port}/chat"
            async with session.ws_connect(url, headers={"Host": dev.host("ws")}) as ws:
                got: list[object] = []
                await ws.send_str("hello")
                got.append((await ws.receive(timeout=30)).data)
                await ws.send_bytes(b"\x00\x01 binary")
                got.append((await ws.receive(timeout=30)).data)
                big = "x" * 300_000
                await ws.send_str(big)
                got.append((await ws.receive(timeout=30)).data == big)
                await ws.close()
                return got

    assert asyncio.run(run()) == ["hello", b"\x00\x01 binary", True]


def seen_headers(dev: Dev, headers: dict[str, str]) -> dict[str, str]:
    status, _, body = request(dev.port, "GET", "/", headers, host=dev.host("headers"))
    assert status == 200, body
    seen: dict[str, str] = json.loads(body)
    return seen


def test_function_sees_only_what_the_caller_sent_plus_forwarding(dev: Dev) -> None:
    """No Accept-Encoding or User-Agent the caller did not send; Connection-named and hop-by-hop
    headers dropped; X-Forwarded-For extended and a Forwarded header built from it;
    K-Original-Host becomes the Host."""
    seen = seen_headers(
        dev,
        {
            "Connection": "keep-alive, X-Private",
            "X-Private": "hop",
            "Keep-Alive": "timeout=5",
            "X-Forwarded-For": "203.0.113.9",
            "X-Custom": "kept",
        },
    )
    assert "accept-encoding" not in seen
    assert "user-agent" not in seen
    assert "accept" not in seen
    assert "x-private" not in seen and "keep-alive" not in seen
    assert seen["x-custom"] == "kept"
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    host = dev.host("headers")
    assert seen["forwarded"] == f"for=203.0.113.9;host={host};proto=http, for=127.0.0.1"

    own = seen_headers(dev, {"Accept-Encoding": "gzip", "K-Original-Host": "shop.example.com"})
    assert own["accept-encoding"] == "gzip"
    assert own["host"] == "shop.example.com"
    assert "k-original-host" not in own


def test_probes_are_answered_by_knfn_not_the_function(dev: Dev) -> None:
    """kubelet's probe gets the queue-proxy's health answer, the ingress's K-Network-Probe its
    hash back, and neither reaches the function (which would answer JSON)."""
    seen_headers(dev, {})  # a replica is up
    kube = {"User-Agent": "kube-probe/1.31", "K-Network-Probe": "queue"}
    status, content_type, body = request(dev.port, "GET", "/", kube, host=dev.host("headers"))
    assert (status, body) == (200, b"queue"), body
    assert content_type.startswith("text/plain")
    bare = {"User-Agent": "kube-probe/1.31"}
    status, _, body = request(dev.port, "GET", "/", bare, host=dev.host("headers"))
    assert status == 400 and b"unexpected probe header value" in body

    conn_headers = {"K-Network-Probe": "probe", "K-Network-Hash": "abc123"}
    conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": dev.host("headers"), **conn_headers})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("K-Network-Hash") == "abc123"
        assert resp.read() == b""
    finally:
        conn.close()


def test_idle_timeout_ends_a_stream_and_bounds_its_start(dev: Dev) -> None:
    """idleTimeoutSeconds 2: a stream silent for 5 s is ended after its first event, cleanly
    (a complete chunked body with the timeout message); one silent from the start gets 504."""

    async def run(path: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{dev.port}{path}"
            async with session.get(url, headers={"Host": dev.host("idle")}) as resp:
                return resp.status, await resp.read()  # raises if the stream were cut

    status, body = asyncio.run(run("/?pause=5"))
    assert status == 200
    assert body.startswith(b"data: one\n\n")
    assert b"two" not in body
    assert b"idleTimeoutSeconds" in body

    status, body = asyncio.run(run("/?delay=5"))
    assert status == 504
    assert "idleTimeoutSeconds" in json.loads(body)["error"]


def test_timeout_seconds_mid_stream_ends_the_response(dev: Dev) -> None:
    """timeoutSeconds 5 on a stream that ticks every 0.5 s (never idle): the response ends at the
    deadline with the timeout message, rather than the connection being reset."""

    async def run() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{dev.port}/?ticks=30"
            async with session.get(url, headers={"Host": dev.host("idle")}) as resp:
                return resp.status, await resp.read()

    status, body = asyncio.run(run())
    assert status == 200
    assert body.startswith(b"data: one\n\ndata: tick 0\n\n")
    assert b"two" not in body
    assert b"timeoutSeconds" in body


def test_http2_prior_knowledge_is_told_http_1_1_required(dev: Dev) -> None:
    """An h2c prior-knowledge client gets the server preface and GOAWAY HTTP_1_1_REQUIRED."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
    with socket.create_connection(("127.0.0.1", dev.port), timeout=10) as sock:
        sock.sendall(preface)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    assert isinstance(frames[0], SettingsFrame)
    assert isinstance(frames[-1], GoAwayFrame)
    assert frames[-1].error_code == 0xD


def test_plain_requests_still_work_after_all_that(dev: Dev) -> None:
    """The gateway still answers ordinary requests on every service."""
    assert seen_headers(dev, {})["host"] == dev.host("headers")
