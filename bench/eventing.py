"""Eventing: events the broker accepts and delivers per second, and how long delivery takes.

One `knfn dev` per count of dispatcher processes (`--dispatchers`, default 1 and 2, set with
KNFN_DISPATCHERS)
on a temporary project: a Broker and one Trigger without a filter whose subscriber (by `uri`)
is a trivial aiohttp + uvloop server, this script in its subscriber role as its own process,
answering 204 at once and noting the wall-clock time each event arrived. Against each:

1. unloaded: --unloaded events one at a time (POST through the gateway, wait until the
   subscriber has it, then the next): p50/p99 from sending the POST to the 202 (accept: the
   event and its delivery row committed), and from sending the POST to the subscriber's
   receipt (end to end);
2. loaded, for each of --connections: `wrk -t1 -cN -d<duration>s` POSTing binary events with
   unique ids through the gateway. Accepted/s is 202s per second during the wrk run; then the
   script waits for every accepted event to reach the subscriber. Delivered/s is the events
   delivered over the time from wrk's start to the last receipt, so a backlog left behind when
   wrk stops counts against it. Latency under load is from the ingress to the subscriber: the
   `knativearrivaltime` the ingress sets, against the receive time (both wall clock, one
   machine), and from wrk's send time (`ce-benchsent`, gettimeofday in wrk's Lua) to receipt;
3. paced at half the best delivered rate of that knfn (wrk's `delay` hook keeps one schedule
   for all connections): latency from the ingress to the subscriber when the broker is not
   saturated, which is what a user waits;
4. the baseline, in the same run and on the same embedded Postgres server knfn started (the
   knfn database, at KNFN_PG_PORT): one psycopg client inserting one row per commit
   (synchronous_commit on), commits per second, with the client's and the server's CPU per
   commit. Read it for what it is: one client waits for each commit's WAL flush, so its rate is
   about one over the flush time (a disk figure: fast fsync, high baseline) and it leaves the
   cores mostly idle, whereas delivered/s is bound by CPU: every event crosses the gateway, the
   ingress, Postgres (insert, claim, outcome), a dispatcher and the subscriber.

CPU per delivered event (user + system) by process kind, during each loaded and paced run:
knfn's own process (gateway, broker ingress, group commit), its dispatcher processes, the
Postgres server (postmaster and backends), the subscriber, and wrk (the load generator, which
shares the machine's cores with all of them); "cores busy" is their sum over the run's wall
time. On a machine shared with other work, cores busy well under the machine's count means the
others took the rest: compare runs by CPU per event rather than by rate.
Timings are printed, never asserted.

    .venv/bin/python bench/eventing.py [--duration 6] [--connections 16,64] [--dispatchers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import uvloop
from aiohttp import web
from gateway import cpu_seconds, parse_wrk
from harness import (
    BenchError,
    KnfnDev,
    free_port,
    http_get,
    machine,
    percentile,
    serve_until_sigterm,
    table,
    wait_until,
)

BROKER_HOST = "broker-ingress.knative-eventing.svc.cluster.local"
BROKER_PATH = "/default/default"
EVENT_BODY = b'{"n": 1}'
DRAIN_TIMEOUT = 180.0
TARGET_DELIVERED_PER_S = 2000.0
TARGET_UNLOADED_P50_MS = 5.0
TARGET_VS_BASELINE = 1.5  # delivered/s against one client's one-row commits/s
TARGET_PACED_P99_MS = 50.0  # ingress to subscriber, at half the best delivered rate
PACED_CONNECTIONS = 32
# Where the cores go, by process kind: knfn's own process (gateway, broker ingress, group
# commit), its dispatcher worker processes, the Postgres server (postmaster and backends), the
# subscriber, and wrk, the load generator, which shares the machine with them.
CPU_WATCHED = ("knfn main", "dispatchers", "postgres", "subscriber", "wrk")

MANIFESTS = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: bench, namespace: default}}
spec:
  broker: default
  subscriber: {{uri: 'http://127.0.0.1:{port}/'}}
"""

# Binary-mode CloudEvents, each with its own id and the time wrk wrote it (for POST -> receipt).
WRK_SCRIPT = """\
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_usec; }} bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local n = 0
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Host"] = "{host}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-source"] = "/bench"
wrk.headers["ce-type"] = "bench.event"
{pacing}
request = function()
  n = n + 1
  ffi.C.gettimeofday(tv, nil)
  wrk.headers["ce-id"] = "{prefix}-" .. n
  wrk.headers["ce-benchsent"] = string.format("%d.%06d", tonumber(tv.tv_sec), tonumber(tv.tv_usec))
  return wrk.format(nil, "{path}")
end
"""

# One schedule for every connection of the thread (-t1): each answer takes the next slot, so
# the rate holds whatever the latency (up to the connections' limit).
PACING = """local interval_ms = {interval_ms}
local next_at = nil
delay = function()
  ffi.C.gettimeofday(tv, nil)
  local now = tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
  if next_at == nil or next_at < now - 1000 then next_at = now end
  next_at = next_at + interval_ms
  if next_at <= now then return 0 end
  return math.floor(next_at - now)
end
"""


# -- the subscriber: its own process, as a function replica would be ------------------------
@dataclass
class Received:
    """Receipts since the last /take: receive time, knativearrivaltime, ce-benchsent."""

    times: list[float] = field(default_factory=list)
    arrivals: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)


async def subscriber(port: int) -> None:
    """Answer every POST with 204 at once; /count, /wait?count=N and /take for the bench."""
    got = Received()

    async def deliver(request: web.Request) -> web.Response:
        await request.read()
        got.times.append(time.time())
        got.arrivals.append(request.headers.get("ce-knativearrivaltime", ""))
        got.sent.append(request.headers.get("ce-benchsent", ""))
        got.grew.set()
        return web.Response(status=204)

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"count": len(got.times)})

    async def wait(request: web.Request) -> web.Response:
        wanted = int(request.query["count"])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(float(request.query.get("timeout", "10"))):
                while len(got.times) < wanted:
                    got.grew.clear()
                    await got.grew.wait()
        return web.json_response({"count": len(got.times)})

    async def take(_: web.Request) -> web.Response:
        nonlocal got
        taken, got = got, Received()
        return web.json_response(
            {"times": taken.times, "arrivals": taken.arrivals, "sent": taken.sent}
        )

    app = web.Application()
    app.router.add_get("/count", count)
    app.router.add_get("/wait", wait)
    app.router.add_get("/take", take)
    app.router.add_post("/{tail:.*}", deliver)
    await serve_until_sigterm(app, port)


@dataclass
class Subscriber:
    proc: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls) -> Subscriber:
        port = free_port()
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-subscriber", str(port)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        wait_until(lambda: _answers(port), 15, f"the subscriber on port {port} answering")
        return cls(proc, port)

    def get(self, path: str) -> Any:
        status, body = http_get(self.port, path)
        if status != 200:
            raise BenchError(f"subscriber {path}: HTTP {status}")
        return json.loads(body)

    def count(self) -> int:
        return int(self.get("/count")["count"])

    def wait(self, count: int, timeout: float = 10.0) -> int:
        """Until the subscriber has count events (or timeout passes); how many it has."""
        return int(self.get(f"/wait?count={count}&timeout={timeout}")["count"])

    def take(self) -> Receipts:
        """Everything received since the last take, and start afresh."""
        data = self.get("/take")
        return Receipts(data["times"], data["arrivals"], data["sent"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/count")[0] == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Receipts:
    times: list[float]
    arrivals: list[str]
    sent: list[str]

    def from_arrival_ms(self) -> list[float]:
        """knativearrivaltime (set by the ingress) to receipt, per event."""
        return [
            (t - datetime.fromisoformat(a).timestamp()) * 1000
            for t, a in zip(self.times, self.arrivals, strict=True)
            if a
        ]

    def from_sent_ms(self) -> list[float]:
        """wrk's send time (ce-benchsent) to receipt, per event."""
        return [(t - float(s)) * 1000 for t, s in zip(self.times, self.sent, strict=True) if s]


# -- knfn on the bench project --------------------------------------------------------------
class EventingDev(KnfnDev):
    """`knfn dev` (harness.KnfnDev) on the bench's own project instead of the repository's."""

    def __init__(self, project: Path, dispatchers: int) -> None:
        self.pg_port = free_port()
        super().__init__({"KNFN_DISPATCHERS": str(dispatchers), "KNFN_PG_PORT": str(self.pg_port)})
        self.project = project

    @property
    def argv(self) -> list[str]:
        argv = super().argv
        argv[argv.index("--project-dir") + 1] = str(self.project)
        return argv

    def dispatcher_pids(self) -> list[int]:
        """knfn's dispatcher processes (its children running dispatch-worker)."""
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == self.pid and b"dispatch-worker" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
        return pids

    def postgres_pids(self) -> list[int]:
        """The postmaster knfn started for this run (found by its port) and its backends."""
        wanted = [b"-p", str(self.pg_port).encode()]
        pids: list[int] = []
        parents: dict[int, int] = {}
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(proc.name)] = int(fields[1])  # after "pid (comm)": state, ppid
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                pairs = [argv[i : i + 2] for i in range(len(argv) - 1)]
                if argv[0].endswith(b"/postgres") and wanted in pairs:
                    pids.append(int(proc.name))
        return pids + [pid for pid, parent in parents.items() if parent in pids]


def write_project(root: Path, subscriber_port: int) -> Path:
    base = root / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [eventing.yaml]\n")
    (base / "eventing.yaml").write_text(MANIFESTS.format(port=subscriber_port))
    (root / "functions").mkdir()
    return root


# -- the measurements -----------------------------------------------------------------------
@dataclass(frozen=True)
class Unloaded:
    accept_ms: list[float]
    post_to_receipt_ms: list[float]
    arrival_to_receipt_ms: list[float]


def unloaded(dev: KnfnDev, sub: Subscriber, events: int, prefix: str) -> Unloaded:
    """Events one at a time: POST, read the 202, wait until the subscriber has the event."""
    sub.take()
    conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=30)
    accept: list[float] = []
    sent: list[float] = []
    try:
        for i in range(events):
            headers = {
                "Host": BROKER_HOST,
                "Content-Type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": f"{prefix}-{i}",
                "ce-source": "/bench",
                "ce-type": "bench.event",
            }
            started = time.time()
            conn.request("POST", BROKER_PATH, body=EVENT_BODY, headers=headers)
            resp = conn.getresponse()
            resp.read()
            accept.append((time.time() - started) * 1000)
            if resp.status != 202:
                raise BenchError(f"the broker answered {resp.status} to event {i}")
            sent.append(started)
            if sub.wait(i + 1) < i + 1:
                raise BenchError(f"event {i} did not reach the subscriber within 10s")
    finally:
        conn.close()
    got = sub.take()
    if len(got.times) != events:
        raise BenchError(f"the subscriber got {len(got.times)} of {events} events")
    return Unloaded(
        accept,
        [(t - s) * 1000 for t, s in zip(got.times, sent, strict=True)],
        got.from_arrival_ms(),
    )


@dataclass(frozen=True)
class Loaded:
    connections: int
    accepted: int
    errors: int
    accepted_per_s: float
    accept_p50_ms: float
    accept_p99_ms: float
    delivered: int
    delivered_per_s: float
    backlog: int  # accepted but not yet delivered when wrk stopped
    drain_s: float
    arrival_to_receipt_ms: list[float]
    post_to_receipt_ms: list[float]
    cpu_us: dict[str, float]  # CPU per delivered event by process kind (CPU_WATCHED)
    span_s: float  # from wrk's start to the last receipt

    def cores(self) -> float:
        """Cores kept busy on average by the watched processes over the run."""
        return sum(self.cpu_us.values()) * self.delivered / 1e6 / self.span_s


def loaded(
    dev: EventingDev, sub: Subscriber, connections: int, seconds: int, script: Path
) -> Loaded:
    """One wrk run of binary events, then every accepted event waited for at the subscriber."""
    sub.take()
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    argv.append(f"http://127.0.0.1:{dev.port}{BROKER_PATH}")
    watch = {
        "knfn main": [dev.pid],
        "dispatchers": dev.dispatcher_pids(),
        "postgres": dev.postgres_pids(),
        "subscriber": [sub.proc.pid],
    }
    before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watch.items()}
    before["wrk"] = children_cpu_seconds()
    started = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    ended = time.time()
    wrk_cpu = children_cpu_seconds() - before["wrk"]  # wrk is the only child reaped here
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    result = parse_wrk(done.stdout)
    accepted = result.requests - result.errors
    backlog = max(0, accepted - sub.count())
    drain = wait_until(lambda: sub.count() >= accepted, DRAIN_TIMEOUT, "delivery of every event")
    # Requests still in flight when wrk stopped were accepted too: let them arrive.
    settled = sub.count()
    while True:
        time.sleep(0.3)
        now = sub.count()
        if now == settled:
            break
        settled = now
    watch["postgres"] = dev.postgres_pids()
    after = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watch.items()}
    after["wrk"] = before["wrk"] + wrk_cpu
    got = sub.take()
    delivered = len(got.times)
    cpu = {name: (after[name] - before[name]) * 1e6 / max(delivered, 1) for name in CPU_WATCHED}
    return Loaded(
        connections=connections,
        accepted=accepted,
        errors=result.errors,
        accepted_per_s=accepted / (ended - started),
        accept_p50_ms=result.p50_ms,
        accept_p99_ms=result.p99_ms,
        delivered=delivered,
        delivered_per_s=delivered / (max(got.times) - started),
        backlog=backlog,
        drain_s=drain,
        arrival_to_receipt_ms=got.from_arrival_ms(),
        post_to_receipt_ms=got.from_sent_ms(),
        cpu_us=cpu,
        span_s=max(got.times) - started,
    )


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Baseline:
    """One client's one-row commits: the rate, and CPU per commit of the client and Postgres."""

    commits_per_s: float
    client_cpu_us: float
    postgres_cpu_us: float


def postgres_commits(url: str, seconds: float, postgres: Sequence[int]) -> Baseline:
    """One client inserting one row per transaction (synchronous_commit on): each commit waits
    for its WAL flush, so the rate is about one over the flush time, and the cores are mostly
    idle. postgres: the server's pids (its backend for this client starts after them)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_commits"
            " (id bigserial PRIMARY KEY, attributes jsonb NOT NULL, data bytea)"
        )
        conn.commit()
        attributes = json.dumps({"specversion": "1.0", "id": "x", "source": "/b", "type": "t"})
        commits = 0
        server_before = sum(cpu_seconds(p) for p in postgres)
        backend = conn.info.backend_pid
        backend_before = cpu_seconds(backend)
        client_before = time.process_time()
        end = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            conn.execute(
                "INSERT INTO bench_commits (attributes, data) VALUES (%s, %s)",
                (attributes, EVENT_BODY),
            )
            conn.commit()
            commits += 1
        took = time.perf_counter() - started
        client = time.process_time() - client_before
        server = sum(cpu_seconds(p) for p in postgres) - server_before
        server += cpu_seconds(backend) - backend_before
    per = 1e6 / max(commits, 1)
    return Baseline(commits / took, client * per, server * per)


# -- the run --------------------------------------------------------------------------------
@dataclass
class Run:
    dispatchers: int
    command: str
    unloaded: Unloaded
    loaded: list[Loaded]
    paced: Loaded
    paced_rate: float
    baseline: Baseline
    exit_code: int | None


def wrk_script(tmp: Path, name: str, prefix: str, rate: float | None = None) -> Path:
    """The wrk script for one run; paced at rate events/s when given."""
    pacing = PACING.format(interval_ms=f"{1000.0 / rate:.4f}") if rate else ""
    script = tmp / f"{name}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            body=EVENT_BODY.decode(), host=BROKER_HOST, path=BROKER_PATH, prefix=prefix,
            pacing=pacing,
        )
    )  # fmt: skip
    return script


def one_run(
    project: Path, sub: Subscriber, dispatchers: int, args: argparse.Namespace, tmp: Path
) -> Run:
    dev = EventingDev(project, dispatchers)
    with dev:
        unloaded(dev, sub, 20, f"warm{dispatchers}")  # connections and plans warm, not measured
        quiet = unloaded(dev, sub, args.unloaded, f"one{dispatchers}")
        runs = []
        for connections in args.connections:
            name = f"d{dispatchers}c{connections}"
            script = wrk_script(tmp, name, name)
            runs.append(loaded(dev, sub, connections, args.duration, script))
        rate = max(x.delivered_per_s for x in runs) / 2
        script = wrk_script(tmp, f"d{dispatchers}paced", f"d{dispatchers}p", rate)
        paced = loaded(dev, sub, PACED_CONNECTIONS, args.duration, script)
        baseline = postgres_commits(dev.knfn_database_url(), args.duration, dev.postgres_pids())
        command = dev.command_line()
        code = dev.stop()
    return Run(dispatchers, command, quiet, runs, paced, rate, baseline, code)


def ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):.2f}" if values else "-"


def unloaded_table(runs: Sequence[Run]) -> str:
    header = ["dispatchers", "accept p50 ms", "accept p99 ms", "e2e p50 ms", "e2e p99 ms"]
    header += ["ingress->sub p50 ms", "ingress->sub p99 ms"]
    rows = []
    for r in runs:
        u = r.unloaded
        row = [str(r.dispatchers), ms(u.accept_ms, 50), ms(u.accept_ms, 99)]
        row += [ms(u.post_to_receipt_ms, 50), ms(u.post_to_receipt_ms, 99)]
        row += [ms(u.arrival_to_receipt_ms, 50), ms(u.arrival_to_receipt_ms, 99)]
        rows.append(row)
    return table(header, rows)


def throughput_table(runs: Sequence[Run]) -> str:
    header = ["dispatchers", "conns", "accepted/s", "delivered/s", "backlog", "drain s"]
    header += ["accept p50 ms", "accept p99 ms", "errors"]
    rows = []
    for r in runs:
        for x in r.loaded:
            row = [str(r.dispatchers), str(x.connections), f"{x.accepted_per_s:,.0f}"]
            row += [f"{x.delivered_per_s:,.0f}", f"{x.backlog:,}", f"{x.drain_s:.1f}"]
            row += [f"{x.accept_p50_ms:.2f}", f"{x.accept_p99_ms:.2f}", str(x.errors)]
            rows.append(row)
    return table(header, rows)


def latency_table(runs: Sequence[Run]) -> str:
    header = ["dispatchers", "conns", "ingress->sub p50 ms", "ingress->sub p99 ms"]
    header += ["post->sub p50 ms", "post->sub p99 ms"]
    rows = []
    for r in runs:
        for x in r.loaded:
            row = [str(r.dispatchers), str(x.connections)]
            row += [ms(x.arrival_to_receipt_ms, 50), ms(x.arrival_to_receipt_ms, 99)]
            row += [ms(x.post_to_receipt_ms, 50), ms(x.post_to_receipt_ms, 99)]
            rows.append(row)
    return table(header, rows)


def cpu_table(runs: Sequence[Run]) -> str:
    """CPU per delivered event by process kind, for the loaded and the paced runs."""
    header = ["dispatchers", "conns", *CPU_WATCHED, "total", "cores busy"]
    rows = []
    for r in runs:
        for x, conns in [*((x, str(x.connections)) for x in r.loaded), (r.paced, "paced")]:
            row = [str(r.dispatchers), conns, *(f"{x.cpu_us[name]:.0f}" for name in CPU_WATCHED)]
            row += [f"{sum(x.cpu_us.values()):.0f}", f"{x.cores():.2f}"]
            rows.append(row)
    return table(header, rows)


def paced_table(runs: Sequence[Run]) -> str:
    header = ["dispatchers", "target/s", "accepted/s", "delivered/s"]
    header += ["ingress->sub p50 ms", "ingress->sub p99 ms"]
    rows = []
    for r in runs:
        x = r.paced
        row = [str(r.dispatchers), f"{r.paced_rate:,.0f}", f"{x.accepted_per_s:,.0f}"]
        row += [f"{x.delivered_per_s:,.0f}"]
        row += [ms(x.arrival_to_receipt_ms, 50), ms(x.arrival_to_receipt_ms, 99)]
        rows.append(row)
    return table(header, rows)


def baseline_table(runs: Sequence[Run]) -> str:
    header = ["dispatchers", "postgres commits/s", "ms per commit", "client cpu us"]
    header += ["postgres cpu us", "best delivered/s", "ratio"]
    rows = []
    for r in runs:
        best = max(x.delivered_per_s for x in r.loaded)
        b = r.baseline
        row = [str(r.dispatchers), f"{b.commits_per_s:,.0f}", f"{1000 / b.commits_per_s:.2f}"]
        row += [f"{b.client_cpu_us:.0f}", f"{b.postgres_cpu_us:.0f}"]
        row += [f"{best:,.0f}", f"{best / b.commits_per_s:.2f}x"]
        rows.append(row)
    return table(header, rows)


def report(runs: Sequence[Run], args: argparse.Namespace) -> str:
    best = max(x.delivered_per_s for r in runs for x in r.loaded)
    p50 = min(percentile(r.unloaded.post_to_receipt_ms, 50) for r in runs)
    ratio = max(max(x.delivered_per_s for x in r.loaded) / r.baseline.commits_per_s for r in runs)
    p99 = min(percentile(r.paced.arrival_to_receipt_ms, 99) for r in runs)
    return "\n".join(
        [
            f"Unloaded: {args.unloaded} events one at a time (POST, wait for the subscriber, next)",
            unloaded_table(runs),
            "",
            f"Loaded: wrk -t1 -cN -d{args.duration}s, binary events through the gateway",
            throughput_table(runs),
            "",
            "Loaded: latency to the subscriber",
            latency_table(runs),
            "",
            "CPU per delivered event (us, user + system) by process kind; cores busy = their sum"
            " over the run's wall time (the machine has "
            f"{os.cpu_count()})",
            cpu_table(runs),
            "",
            f"Paced: wrk -t1 -c{PACED_CONNECTIONS} -d{args.duration}s at half the best delivered/s"
            " of the same knfn",
            paced_table(runs),
            "",
            f"Baseline: one psycopg client, one-row INSERT per commit, {args.duration}s",
            baseline_table(runs),
            "",
            f"target: delivered/s at least {TARGET_VS_BASELINE:g}x the one-commit baseline: "
            f"best {ratio:.2f}x ({'met' if ratio >= TARGET_VS_BASELINE else 'missed'})",
            f"target: ingress->sub p99 at most {TARGET_PACED_P99_MS:g} ms at half the best rate: "
            f"best {p99:.2f} ms ({'met' if p99 <= TARGET_PACED_P99_MS else 'missed'})",
            f"target: at least {TARGET_DELIVERED_PER_S:,.0f} events/s delivered end to end: "
            f"best {best:,.0f}/s ({'met' if best >= TARGET_DELIVERED_PER_S else 'missed'})",
            f"target: unloaded p50 (POST to subscriber) at most {TARGET_UNLOADED_P50_MS:g} ms: "
            f"best {p50:.2f} ms ({'met' if p50 <= TARGET_UNLOADED_P50_MS else 'missed'})",
        ]
    )


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="knfn-bench-eventing-") as tmp:
        sub = Subscriber.start()
        try:
            project = write_project(Path(tmp) / "project", sub.port)
            for dispatchers in args.dispatchers:
                runs.append(one_run(project, sub, dispatchers, args, Path(tmp)))
                print(f"knfn: {runs[-1].command}  (exit code {runs[-1].exit_code})")
        finally:
            sub.stop()
    print(
        "subscriber: aiohttp + uvloop in its own process, 204 at once; accept = POST to 202 "
        "(committed); e2e and post->sub = POST sent to subscriber receipt; ingress->sub = "
        "knativearrivaltime to receipt; delivered/s = delivered / (wrk start to last receipt)"
    )
    print()
    print(report(runs, args))
    return 0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run [6]")
    parser.add_argument(
        "--connections", type=_ints, default=[16, 64], help="wrk connections [16,64]"
    )
    parser.add_argument(
        "--dispatchers", type=_ints, default=[1, 2], help="dispatcher processes, a knfn each [1,2]"
    )
    parser.add_argument("--unloaded", type=int, default=200, help="events one at a time [200]")
    parser.add_argument("--serve-subscriber", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_subscriber:
        uvloop.run(subscriber(args.serve_subscriber))
        return 0
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
