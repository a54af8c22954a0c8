"""What the benchmarks share: a `knfn dev` to measure, its /status, free ports, percentiles, tables.

`KnfnDev` runs `knfn dev` as a user would, on free ports with its state in a temporary directory
(so the checkout's .knfn/ is left alone), and stops it the way Ctrl-C would: SIGTERM, then wait
while it stops its replicas and backing services.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from knfn.backing import services
from knfn.ports import free_port

__all__ = [
    "PROJECT",
    "BenchError",
    "KnfnDev",
    "free_port",
    "http_get",
    "machine",
    "percentile",
    "table",
    "wait_until",
]

PROJECT = Path(__file__).resolve().parent.parent
READY_LINE = "ready; Ctrl-C stops everything"
START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
# Variables that would make knfn use external backing services instead of starting its own.
EXTERNAL_BACKING = ("DATABASE_URL", "KNFN_DATABASE_URL", "S3_ENDPOINT_URL")


class BenchError(Exception):
    """A benchmark could not run (a tool missing, knfn not starting, a target not answering)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of values, interpolated linearly between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    cells = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first, *rest = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> str:
    """CPUs and load when the benchmark starts: other work on the machine skews every figure."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min) at start"


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll check() until it is true; the seconds it took. BenchError naming what after timeout."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise BenchError(f"{what} did not happen within {timeout:g}s")
        time.sleep(interval)
    return time.monotonic() - started


def http_get(port: int, path: str = "/", host: str | None = None) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path with an optional Host header (never through a proxy)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class KnfnDev:
    """`knfn dev` as a subprocess on free ports, with extra environment (autoscaler overrides)."""

    def __init__(self, env: Mapping[str, str], state_dir: Path | None = None) -> None:
        """state_dir: a state directory to (re)use (a warm start), else a new temporary one."""
        self.extra_env = dict(env)
        self.port = free_port()
        self.admin_port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="knfn-bench-")
        self.state_dir = state_dir or Path(self._tmp.name) / "state"
        self.log = Path(self._tmp.name) / "dev.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0  # from starting the process to its ready line

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("knfn dev is not running")
        return self.proc.pid

    @property
    def argv(self) -> list[str]:
        knfn = Path(sys.executable).parent / "knfn"
        if not knfn.exists():
            raise BenchError(f"no {knfn}: run with the project's venv (make bench)")
        return [
            str(knfn),
            "--project-dir",
            str(PROJECT),
            "--state-dir",
            str(self.state_dir),
            "dev",
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_BACKING}
        env.update(KNFN_PG_PORT=str(free_port()), KNFN_S3_PORT=str(free_port()))
        env.update(self.extra_env)  # may fix the backing ports, for a second start
        return env

    def knfn_database_url(self) -> str:
        """knfn's own database (events, deliveries), with the password knfn keeps in the state
        directory: knfn's resolver, so the bench never guesses credentials."""
        found = services.find(services.BackingConfig.from_env(self.state_dir, {}))
        if found is None:
            raise BenchError(f"the backing services of {self.state_dir} are not running")
        return found.knfn_database_url

    def command_line(self) -> str:
        """The command as one shell line, overrides first, for the report."""
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.extra_env.items()))
        return f"{shown} {' '.join(self.argv)}".strip()

    def start(self) -> None:
        """Start knfn and wait for its ready line; BenchError with the log's tail if it fails."""
        env, started = self.env(), time.monotonic()
        with open(self.log, "wb") as out:
            # Own session: a Ctrl-C at the terminal reaches the benchmark, which stops knfn.
            self.proc = subprocess.Popen(
                self.argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = self.proc
        deadline = started + START_TIMEOUT
        while READY_LINE not in self.log.read_text("utf-8", "replace"):
            if proc.poll() is not None:
                raise BenchError(f"knfn dev exited with code {proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"knfn dev not ready within {START_TIMEOUT:g}s:\n{self.tail()}")
            time.sleep(0.01)
        self.start_seconds = time.monotonic() - started

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text("utf-8", "replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """1. SIGTERM knfn (it stops replicas and backing services), 2. wait, 3. SIGKILL the
        group if it hangs. Its exit code (None if it never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> KnfnDev:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the admin API -------------------------------------------------------------------------
    def admin_get(self, path: str) -> bytes:
        status, body = http_get(self.admin_port, path)
        if status != 200:
            raise BenchError(f"admin API {path}: HTTP {status}: {body[:200]!r}")
        return body

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.admin_get("/status"))
        return data

    def revision(self, service: str, namespace: str = "default") -> dict[str, Any]:
        """The /status entry of the Service's latest ready revision (else its first one)."""
        for svc in self.status()["services"]:
            if (svc["name"], svc["namespace"]) != (service, namespace):
                continue
            revisions: list[dict[str, Any]] = svc["revisions"]
            latest = svc.get("latest_ready_revision")
            chosen = next((r for r in revisions if r["name"] == latest), None)
            if chosen is None and revisions:
                chosen = revisions[0]
            if chosen is not None:
                return chosen
        raise BenchError(f"/status has no revision of {service}.{namespace}")


async def serve_until_sigterm(app: web.Application, port: int) -> None:
    """Serve app on 127.0.0.1:port until this process gets SIGTERM (helper processes)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
