"""Helpers shared by the test layers: free ports, waiting for HTTP, running real processes,
`knfn dev` on the default project, and the TCP sockets the kernel lists as listening."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from knfn.ports import free_port

__all__ = [
    "BROKER_INGRESS_HOST",
    "KNFN",
    "READY_LINE",
    "REPO",
    "DevRun",
    "assert_json_error",
    "binary",
    "dev_env",
    "free_port",
    "http_server_thread",
    "knfn_dev",
    "listening_sockets",
    "post_events",
    "request",
    "running",
    "services_down",
    "stop_process",
    "wait_http",
]

REPO = Path(__file__).resolve().parent.parent
KNFN = str(Path(sys.executable).parent / "knfn")
READY_LINE = "ready; Ctrl-C stops everything"
BROKER_INGRESS_HOST = "broker-ingress.knative-eventing.svc.cluster.local"


def wait_http(url: str, timeout: float = 10.0) -> None:
    """Poll url until anything answers over HTTP (any status), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout}s: {exc}") from exc
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def running(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real process in its own group, stopped (SIGTERM, then SIGKILL) however the test ends."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def http_server_thread(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int
) -> Iterator[None]:
    """A real aiohttp server on a loopback port, on its own event loop in a thread, for
    synchronous tests (a subscriber that records deliveries, say)."""
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def request(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] = {},
    body: bytes = b"",
    *,
    host: str | None = None,
    chunked: bool = False,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request to 127.0.0.1:port, headers sent as given
    (latin-1; Host is `host` when given, else http.client's). A chunked body goes out in pieces
    of chunk_size bytes, else with its Content-Length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in headers.items():
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for start in range(0, len(body), chunk_size):
                piece = body[start : start + chunk_size]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


async def post_events(
    port: int, events: Sequence[Mapping[str, str]], clients: int = 1
) -> list[int]:
    """Binary-mode POSTs of these events (their attributes) to the default broker through the
    gateway on port, `clients` at a time; the statuses in order (-1: no answer)."""
    statuses = [0] * len(events)
    todo = iter(enumerate(events))
    url = f"http://127.0.0.1:{port}/default/default"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            for i, attrs in todo:
                headers = {f"ce-{k}": v for k, v in attrs.items()}
                headers.update({"Host": BROKER_INGRESS_HOST, "Content-Type": "application/json"})
                try:
                    async with session.post(url, data=b'{"n": 1}', headers=headers) as resp:
                        statuses[i] = resp.status
                except aiohttp.ClientError:
                    statuses[i] = -1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def admin_status(admin_port: int) -> dict[str, Any]:
    """GET /status of a running `knfn dev`'s admin API."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def revisions_of(admin_port: int, service: str) -> dict[str, dict[str, Any]]:
    """A Service's revisions in /status, by name."""
    svc = next(s for s in admin_status(admin_port)["services"] if s["name"] == service)
    return {r["name"]: r for r in svc["revisions"]}


def binary(source: str, event_id: str, type_: str = "test.event") -> dict[str, str]:
    """The headers of a binary-mode CloudEvent with JSON data."""
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": type_,
        "Content-Type": "application/json",
    }


def assert_json_error(status: int, content_type: str, body: bytes) -> str:
    """The message of a knfn error answer, asserting it is JSON with a non-empty "error"."""
    assert content_type.startswith("application/json"), (status, content_type, body[:300])
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message, body[:300]
    return message


def services_down(env: Mapping[str, str]) -> None:
    """`knfn services down` for the state dir in env: the backing servers a killed knfn left."""
    subprocess.run(
        [KNFN, "--project-dir", str(REPO), "services", "down"],
        env=dict(env),
        capture_output=True,
        timeout=60,
        check=False,
    )


def dev_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `knfn dev` on free loopback ports with its state in state_dir, and
    without the caller's DATABASE_URL or S3_ENDPOINT_URL (knfn starts its own servers)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    env.update(
        KNFN_PORT=str(free_port()),
        KNFN_ADMIN_PORT=str(free_port()),
        KNFN_PG_PORT=str(free_port()),
        KNFN_S3_PORT=str(free_port()),
        KNFN_STATE_DIR=str(state_dir),
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class DevRun:
    """A running `knfn dev`: its process, environment and combined output."""

    proc: subprocess.Popen[str]
    env: Mapping[str, str]
    log: Path

    @property
    def port(self) -> int:
        return int(self.env["KNFN_PORT"])

    @property
    def admin_port(self) -> int:
        return int(self.env["KNFN_ADMIN_PORT"])

    @property
    def state(self) -> Path:
        return Path(self.env["KNFN_STATE_DIR"])


def eventing_project(root: Path, manifests: str) -> Path:
    """A project under root whose knative/base holds only these eventing objects (no
    functions), for `knfn_dev(..., project=root)`."""
    base = root / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [eventing.yaml]\n")
    (base / "eventing.yaml").write_text(manifests)
    (root / "functions").mkdir()
    return root


@contextmanager
def knfn_dev(
    workdir: Path,
    timeout: float = 120.0,
    extra_env: Mapping[str, str] | None = None,
    *,
    project: Path = REPO,
    args: Sequence[str] = (),
) -> Iterator[DevRun]:
    """`knfn dev` (with args, e.g. --watch) on the default project (this repository, or
    `project`), free ports, state and log under workdir (and extra_env, e.g. KNFN_PRINT),
    yielded once it logs that it is ready. At exit a knfn still running is killed with its
    group, and its backing servers (in their own sessions) are stopped."""
    env = dev_env(workdir / ".knfn", **(extra_env or {}))
    log = workdir / "dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [KNFN, "--project-dir", str(project), "dev", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while READY_LINE not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield DevRun(proc, env, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        services_down(env)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every TCP socket in LISTEN state (0A) in this network
    namespace, from /proc/net/tcp and tcp6 (addresses as the kernel prints them: each 32-bit
    word in host byte order, little-endian here)."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            hex_address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] != "0A":
                continue
            raw = bytes.fromhex(hex_address)
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (str(ipaddress.ip_address(packed)), int(hex_port, 16))
    return found
