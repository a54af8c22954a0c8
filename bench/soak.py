"""Soak: mixed HTTP and events against `knfn dev` for minutes, one backing service killed midway.

One `knfn dev` on the repository's own project (knative/base, all eight functions), on free ports
with its state in a temporary directory. For --duration seconds one asyncio loop drives a bounded
mixed load through the gateway:

- hello: `GET /?sleep=50`, --hello-concurrency requests in a closed loop;
- query: `GET /objects?limit=5` at --query-rate a second;
- ingest: a small PNG (unique bytes each time) POSTed at --ingest-rate a second;
- events: binary-mode CloudEvents with unique ids POSTed to the default broker at --event-rate a
  second (delivered by the `event-display-all` Trigger).

Paced kinds never have more than --max-in-flight requests outstanding; a tick that finds them all
busy is counted as shed, not sent. At --kill-at (default: half the duration) the Postgres or S3
server knfn started (pid from `<state>/services.json`) gets SIGKILL; knfn is expected to restart
it by itself. The service is *back* when it answers again (Postgres: a connection runs
`SELECT 1`; S3: any HTTP answer). A failed request whose lifetime overlaps [kill, back + --grace]
is an injected error; every other failed request is not. When the service is not back by the end
of the load, the run fails; when that service is Postgres, the script stops knfn and starts the
services by hand (`knfn services up`) so that the events can still be counted.

Every --sample-every seconds the knfn process's VmRSS is read, and every process below it noted.
After the load the script waits (bounded) until every event answered 202 has been delivered, as
knfn's own tables say (knfn_events, knfn_deliveries), then stops knfn with SIGTERM and looks for
anything left running: a process seen below knfn during the run, or one whose command line or
environment names the temporary directory, or whose working directory is inside it.

Exit code: 0 when there was no error outside the injected window, no event was lost, the killed
service came back, and nothing was left running; 1 otherwise. RSS is reported, not enforced.
The baseline is the same run without a fault (--no-kill).

    .venv/bin/python bench/soak.py [--duration 600] [--kill postgres|s3] [--kill-at S]
                                   [--no-kill] [--event-rate 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from harness import BenchError, KnfnDev, machine, percentile, table
from PIL import Image

from knfn.backing import postgres

BROKER_HOST = "broker-ingress.knative-eventing.svc.cluster.local"
BROKER_PATH = "/default/default"
EVENT_BODY = b'{"soak": true}'
EXPECTED = {"hello": 200, "query": 200, "ingest": 201, "events": 202}
HOSTS = {"hello": "hello.default.localhost", "query": "query.default", "ingest": "ingest.default"}
CLASSES = ("2xx", "3xx", "4xx", "5xx", "conn", "timeout")
ERROR_BACKOFF = 0.1  # a closed-loop worker pauses this long after a failure, so it never spins
PROBE_INTERVAL = 0.25
STALL_TIMEOUT = 30.0  # the drain gives up when no further event is delivered for this long
GONE_TIMEOUT = 30.0  # for a killed service's pid to disappear once knfn has stopped
TARGET_RSS_SLOPE = 1.0  # MiB per minute over the second half: what "flat" is taken to mean


# -- knfn under test ------------------------------------------------------------------------
class SoakDev(KnfnDev):
    """`knfn dev` (harness.KnfnDev) whose environment is fixed once, so that a hand-run
    `knfn services up` later binds the very same ports."""

    def __init__(self) -> None:
        super().__init__({})
        self.root = self.state_dir.parent
        self._env = super().env()
        # Children that inherit knfn's environment carry the state dir: the leftover check
        # recognises them by it.
        self._env["KNFN_STATE_DIR"] = str(self.state_dir)

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def recorded(self, name: str) -> dict[str, Any]:
        """The services.json record of an embedded service ({} if there is none)."""
        try:
            state: dict[str, dict[str, Any]] = json.loads(
                (self.state_dir / "services.json").read_text()
            )
        except (OSError, ValueError):
            return {}
        return state.get(name, {})

    def knfn_database_url(self) -> str:
        """The URL of knfn's own database (events, deliveries).

        knfn's resolver first (it knows the credentials, wherever they are kept); while a
        service is down it answers nothing, and then the recorded port is enough on a server
        that trusts loopback. The one place to adjust if the way credentials are kept changes.
        """
        with contextlib.suppress(Exception):  # a service is down: use the fallback
            return super().knfn_database_url()
        port = int(self.recorded("postgres").get("port", 0))
        if not port:
            raise BenchError(f"no postgres in {self.state_dir / 'services.json'}")
        return postgres.url(port, postgres.KNFN_DATABASE)

    def services_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*self.argv[: self.argv.index("dev")], "services", *args]
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, check=False)


# -- processes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: tells a pid's reuse apart
    state: str
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    try:
        base = Path("/proc") / str(pid)
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        argv = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except (OSError, IndexError, ValueError):
        return None
    # After "pid (comm)": state, ppid, ..., starttime is field 22 of stat (index 19 here).
    return Proc(pid, int(fields[1]), int(fields[19]), fields[0], argv.strip())


def all_procs() -> list[Proc]:
    procs = (read_proc(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [p for p in procs if p is not None]


def descendants(root: int, procs: Iterable[Proc]) -> list[Proc]:
    """Every process below root (children, their children, ...)."""
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: list[Proc] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def rss_mib(pid: int) -> float | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def names_dir(pid: int, marker: str) -> bool:
    """Whether a process's command line or environment names marker, or its cwd is inside it."""
    base = Path("/proc") / str(pid)
    with contextlib.suppress(OSError):
        if os.readlink(base / "cwd").startswith(marker):
            return True
    for part in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            if marker.encode() in (base / part).read_bytes():
                return True
    return False


def leftovers(seen: Mapping[tuple[int, int], Proc], marker: str) -> list[Proc]:
    """Processes still alive that knfn started: seen below it, or naming the state's directory."""
    alive = {p.pid: p for p in all_procs() if p.state != "Z" and p.pid != os.getpid()}
    left = [p for p in alive.values() if (p.pid, p.start) in seen]
    left += [p for p in alive.values() if (p.pid, p.start) not in seen and names_dir(p.pid, marker)]
    return sorted(left, key=lambda p: p.pid)


# -- the load -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    kind: str
    started: float  # seconds since the load started
    ended: float
    outcome: str  # the status code, "conn" or "timeout"
    detail: str


@dataclass
class Tally:
    """What the load saw, per kind: outcome classes, latency of the successes, the failures."""

    classes: dict[str, Counter[str]] = field(
        default_factory=lambda: {k: Counter() for k in EXPECTED}
    )
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EXPECTED})
    failures: list[Failure] = field(default_factory=list)
    shed: Counter[str] = field(default_factory=Counter)
    accepted_ids: list[str] = field(default_factory=list)


@dataclass
class Fault:
    """The kill and the service's return, in seconds since the load started (None: did not)."""

    service: str
    old_pid: int | None = None
    killed_at: float | None = None
    back_at: float | None = None
    new_pid: int | None = None
    restarted_by_hand: bool = False

    @property
    def recovery_s(self) -> float | None:
        if self.killed_at is None or self.back_at is None:
            return None
        return self.back_at - self.killed_at


@dataclass
class Samples:
    times: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    seen: dict[tuple[int, int], Proc] = field(default_factory=dict)


class Load:
    """The mixed load on one loop; times are loop.time() minus self.t0."""

    def __init__(self, dev: SoakDev, args: argparse.Namespace, prefix: str) -> None:
        self.dev, self.args, self.prefix = dev, args, prefix
        self.base = f"http://127.0.0.1:{dev.port}"
        self.tally = Tally()
        self.samples = Samples()
        self.fault = Fault(args.kill)
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.until = self.t0 + args.duration

    def now(self) -> float:
        return self.loop.time() - self.t0

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.args.timeout)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            jobs: list[Awaitable[None]] = [
                self.hello(session, i) for i in range(self.args.hello_concurrency)
            ]
            jobs.append(self.paced("query", self.args.query_rate, self.query(session)))
            jobs.append(self.paced("ingest", self.args.ingest_rate, self.ingest(session)))
            jobs.append(self.paced("events", self.args.event_rate, self.event(session)))
            jobs.append(self.sample())
            if not self.args.no_kill:
                jobs.append(self.kill_and_watch())
            await asyncio.gather(*jobs)

    async def call(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> bool:
        """One request; its outcome recorded. Whether it got the expected status."""
        started = self.now()
        detail = ""
        try:
            async with session.request(
                method, self.base + path, headers=headers, data=body
            ) as resp:
                text = await resp.read()
                outcome = str(resp.status)
                if resp.status != EXPECTED[kind]:
                    detail = text[:200].decode("utf-8", "replace")
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError as exc:
            outcome, detail = "conn", f"{type(exc).__name__}: {exc}"[:200]
        ended = self.now()
        klass = f"{outcome[0]}xx" if outcome.isdigit() else outcome
        self.tally.classes[kind][klass] += 1
        if outcome == str(EXPECTED[kind]):
            self.tally.latency_ms[kind].append((ended - started) * 1000)
            return True
        self.tally.failures.append(Failure(kind, started, ended, outcome, detail))
        return False

    async def hello(self, session: aiohttp.ClientSession, _: int) -> None:
        headers = {"Host": HOSTS["hello"]}
        while self.loop.time() < self.until:
            if not await self.call(session, "hello", "GET", "/?sleep=50", headers):
                await asyncio.sleep(ERROR_BACKOFF)

    def query(self, session: aiohttp.ClientSession) -> Callable[[int], Coroutine[Any, Any, None]]:
        async def fire(_: int) -> None:
            await self.call(session, "query", "GET", "/objects?limit=5", {"Host": HOSTS["query"]})

        return fire

    def ingest(self, session: aiohttp.ClientSession) -> Callable[[int], Coroutine[Any, Any, None]]:
        headers = {"Host": HOSTS["ingest"], "Content-Type": "image/png"}

        async def fire(n: int) -> None:
            await self.call(session, "ingest", "POST", "/", headers, png(self.prefix, n))

        return fire

    def event(self, session: aiohttp.ClientSession) -> Callable[[int], Coroutine[Any, Any, None]]:
        async def fire(n: int) -> None:
            event_id = f"{self.prefix}-{n}"
            headers = {
                "Host": BROKER_HOST,
                "Content-Type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": event_id,
                "ce-source": "/bench/soak",
                "ce-type": "bench.soak",
            }
            if await self.call(session, "events", "POST", BROKER_PATH, headers, EVENT_BODY):
                self.tally.accepted_ids.append(event_id)

        return fire

    async def paced(
        self, kind: str, rate: float, fire: Callable[[int], Coroutine[Any, Any, None]]
    ) -> None:
        """fire(n) rate times a second until the end, at most --max-in-flight at once."""
        if rate <= 0:
            return
        interval = 1.0 / rate
        in_flight: set[asyncio.Task[None]] = set()
        n = 0
        next_at = self.loop.time()
        while next_at < self.until:
            await asyncio.sleep(max(0.0, next_at - self.loop.time()))
            if len(in_flight) < self.args.max_in_flight:
                task = asyncio.create_task(fire(n))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                n += 1
            else:
                self.tally.shed[kind] += 1
            # A loop that fell behind resumes the pace instead of catching up in a burst.
            next_at = max(next_at + interval, self.loop.time() - 1.0)
        await asyncio.gather(*in_flight)

    async def sample(self) -> None:
        """knfn's RSS and the processes below it, every --sample-every seconds."""
        while True:
            rss = rss_mib(self.dev.pid)
            if rss is not None:
                self.samples.times.append(self.now())
                self.samples.rss.append(rss)
            procs = await asyncio.to_thread(all_procs)
            for p in descendants(self.dev.pid, procs):
                self.samples.seen.setdefault((p.pid, p.start), p)
            if self.loop.time() >= self.until:
                return
            await asyncio.sleep(min(self.args.sample_every, self.until - self.loop.time()))

    async def kill_and_watch(self) -> None:
        """SIGKILL the service at --kill-at, then probe it until it answers again."""
        await asyncio.sleep(max(0.0, self.t0 + self.args.kill_at - self.loop.time()))
        fault = self.fault
        pid = int(self.dev.recorded(fault.service).get("pid", 0))
        if not pid:
            raise BenchError(f"no {fault.service} pid in {self.dev.state_dir / 'services.json'}")
        fault.old_pid = pid
        os.kill(pid, signal.SIGKILL)
        fault.killed_at = self.now()
        print(f"soak: t={fault.killed_at:.1f}s SIGKILL {fault.service} (pid {pid})", flush=True)
        went_down = False
        while self.loop.time() < self.until:
            answers = await asyncio.to_thread(self.service_answers)
            if not answers:
                went_down = True
            elif went_down:
                fault.back_at = self.now()
                fault.new_pid = int(self.dev.recorded(fault.service).get("pid", 0)) or None
                print(
                    f"soak: t={fault.back_at:.1f}s {fault.service} answers again"
                    f" after {fault.recovery_s:.1f}s (pid {fault.new_pid})",
                    flush=True,
                )
                return
            await asyncio.sleep(PROBE_INTERVAL)
        print(f"soak: {fault.service} did not answer again before the load ended", flush=True)

    def service_answers(self) -> bool:
        if self.fault.service == "postgres":
            return postgres_answers(self.dev.knfn_database_url())
        port = int(self.dev.recorded("s3").get("port", 0))
        return bool(port) and http_answers(port)


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def http_answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def png(prefix: str, n: int) -> bytes:
    """A 32x32 PNG whose bytes differ for every n (ingest stores by content hash)."""
    image = Image.new("RGB", (32, 32), (n % 256, (n // 256) % 256, 128))
    image.putpixel((0, 0), (zlib.crc32(prefix.encode()) % 256, 0, 0))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# -- the count ------------------------------------------------------------------------------
COUNT_SQL = """
SELECT e.attributes->>'id',
       count(d.id) FILTER (WHERE d.kind = 'subscriber'),
       count(d.id) FILTER (WHERE d.kind = 'subscriber' AND d.state = 'delivered'),
       count(d.id) FILTER (WHERE d.state = 'dead')
  FROM knfn_events e LEFT JOIN knfn_deliveries d ON d.event_id = e.id
 WHERE e.attributes->>'id' LIKE %s
 GROUP BY 1
"""


@dataclass(frozen=True)
class Count:
    stored: frozenset[str]  # ids of this run in knfn_events
    delivered: frozenset[str]  # ids whose every subscriber delivery is delivered
    dead_lettered: int


def count_events(url: str, prefix: str) -> Count:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(COUNT_SQL, (f"{prefix}-%",)).fetchall()
    stored = frozenset(str(i) for i, *_ in rows)
    delivered = frozenset(str(i) for i, subs, ok, _ in rows if subs and ok == subs)
    return Count(stored, delivered, sum(int(dead) for *_, dead in rows))


def drain(
    dev: SoakDev, prefix: str, accepted: set[str], timeout: float
) -> tuple[Count | None, float]:
    """Poll knfn's tables until every accepted event is delivered, delivery stalls, or timeout
    (0: count once). The last count (None if the database never answered) and the seconds."""
    started = last_progress = time.monotonic()
    best: Count | None = None
    while True:
        with contextlib.suppress(psycopg.Error, BenchError):
            got = count_events(dev.knfn_database_url(), prefix)
            if best is None or len(got.delivered & accepted) > len(best.delivered & accepted):
                last_progress = time.monotonic()
            best = got
        now = time.monotonic()
        if (best is not None and accepted <= best.delivered) or now - started >= timeout:
            break
        if now - last_progress > STALL_TIMEOUT:
            break
        time.sleep(1.0)
    return best, time.monotonic() - started


# -- the report -----------------------------------------------------------------------------
@dataclass
class Result:
    command: str
    duration_s: float
    fault: dict[str, Any]
    injected_window_s: list[float] | None
    requests: dict[str, dict[str, int]]
    latency_ms: dict[str, dict[str, float]]
    shed: dict[str, int]
    errors_injected: int
    errors_not_injected: int
    first_errors_not_injected: list[dict[str, Any]]
    events_accepted: int
    events_stored: int
    events_accepted_not_stored: int
    events_delivered: int
    events_lost: int
    events_dead_lettered: int
    drain_s: float
    rss_mib: dict[str, float]
    rss_slope_mib_per_min: float
    rss_samples: list[list[float]]
    knfn_exit_code: int | None
    stop_s: float
    left_running: list[str]
    tracebacks_in_log: int
    passed: bool
    problems: list[str]


def slope_per_min(times: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of values over times (seconds), per minute; 0 with under 2 points."""
    if len(times) < 2:
        return 0.0
    mt, mv = sum(times) / len(times), sum(values) / len(values)
    var = sum((t - mt) ** 2 for t in times)
    if var == 0:
        return 0.0
    return 60 * sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / var


def window(fault: Fault, grace: float, end: float) -> tuple[float, float] | None:
    """[kill, back + grace]; up to the end of the load when the service never came back."""
    if fault.killed_at is None:
        return None
    back = end if fault.back_at is None else min(end, fault.back_at + grace)
    return (fault.killed_at, back)


def split_failures(
    failures: Sequence[Failure], span: tuple[float, float] | None
) -> tuple[list[Failure], list[Failure]]:
    """(injected, not injected): injected when the request's lifetime overlaps the window."""
    injected: list[Failure] = []
    other: list[Failure] = []
    for f in failures:
        inside = span is not None and f.started <= span[1] and f.ended >= span[0]
        (injected if inside else other).append(f)
    return injected, other


def ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q), 2) if values else float("nan")


def requests_table(r: Result, injected: Counter[str], other: Counter[str]) -> str:
    header = ["function", "expected", "requests", *CLASSES, "shed"]
    header += ["err injected", "err other", "p50 ms", "p99 ms"]
    rows = []
    for kind, expected in EXPECTED.items():
        counts = r.requests[kind]
        row = [kind, str(expected), f"{sum(counts.values()):,}"]
        row += [f"{counts.get(c, 0):,}" for c in CLASSES]
        row += [f"{r.shed.get(kind, 0):,}", f"{injected[kind]:,}", f"{other[kind]:,}"]
        row += [f"{r.latency_ms[kind]['p50']:.1f}", f"{r.latency_ms[kind]['p99']:.1f}"]
        rows.append(row)
    return table(header, rows)


def figures_table(r: Result) -> str:
    fault = r.fault
    if fault["killed_at"] is None:
        killed = back = "-"
    else:
        killed = f"{fault['service']} (pid {fault['old_pid']}) at t={fault['killed_at']:.1f}s"
        if fault["back_at"] is None:
            back = "no"
            if fault["restarted_by_hand"]:
                back += " (restarted by hand for the count)"
        else:
            back = f"after {fault['recovery_s']:.1f}s at t={fault['back_at']:.1f}s"
            back += f" (pid {fault['new_pid']})"
    span = r.injected_window_s
    rss = r.rss_mib
    rows = [
        ["duration", f"{r.duration_s:.0f}s"],
        ["killed", killed],
        ["answered again", back],
        ["injected window", f"t={span[0]:.1f}s..{span[1]:.1f}s" if span else "-"],
        ["errors injected", f"{r.errors_injected:,}"],
        ["errors not injected", f"{r.errors_not_injected:,}"],
        ["events accepted (202)", f"{r.events_accepted:,}"],
        ["events stored", f"{r.events_stored:,}"],
        ["events accepted, not stored", f"{r.events_accepted_not_stored:,}"],
        ["events delivered", f"{r.events_delivered:,}"],
        ["events lost", f"{r.events_lost:,}"],
        ["events dead-lettered", f"{r.events_dead_lettered:,}"],
        ["drain after the load", f"{r.drain_s:.1f}s"],
        [
            "knfn RSS start/min/max/end",
            f"{rss['start']:.0f} / {rss['min']:.0f} / {rss['max']:.0f} / {rss['end']:.0f} MiB",
        ],
        ["knfn RSS slope, 2nd half", f"{r.rss_slope_mib_per_min:+.2f} MiB/min"],
        ["knfn exit code, stop time", f"{r.knfn_exit_code}, {r.stop_s:.1f}s"],
        ["left running after stop", str(len(r.left_running))],
        ["tracebacks in knfn's log", str(r.tracebacks_in_log)],
    ]
    return table(["figure", "value"], rows)


def report(r: Result, injected: Counter[str], other: Counter[str]) -> str:
    lines = [
        f"Requests through the gateway ({r.duration_s:.0f}s; shed = ticks skipped with every "
        "slot busy; p50/p99 of the expected answers)",
        requests_table(r, injected, other),
        "",
        figures_table(r),
    ]
    if r.first_errors_not_injected:
        lines += ["", "first errors outside the injected window:"]
        lines += [
            f"  t={e['started']:.1f}s..{e['ended']:.1f}s {e['kind']} {e['outcome']} {e['detail']}"
            for e in r.first_errors_not_injected
        ]
    if r.left_running:
        lines += ["", "left running after knfn stopped (now killed):"]
        lines += [f"  {p}" for p in r.left_running]
    flat = "met" if abs(r.rss_slope_mib_per_min) <= TARGET_RSS_SLOPE else "missed"
    lines += [
        "",
        f"target: RSS slope within +-{TARGET_RSS_SLOPE:g} MiB/min over the second half "
        f"({flat}; reported, not enforced)",
        "result: " + ("pass" if r.passed else "FAIL: " + "; ".join(r.problems)),
    ]
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------
def soak(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    prefix = f"soak-{os.getpid()}-{int(time.time())}"
    dev = SoakDev()
    try:
        started = time.monotonic()
        dev.start()
        print(f"knfn: {dev.command_line()}  (ready in {time.monotonic() - started:.1f}s)")
        print(f"knfn log: {dev.log}", flush=True)
        load = asyncio.run(run_load(dev, args, prefix))
        return finish(dev, load, args, prefix)
    finally:
        dev.stop()
        if args.keep_logs:
            keep_logs(dev, Path(args.keep_logs))
        dev.close()


def gone(pid: int, timeout: float) -> bool:
    """Wait until pid no longer exists (not even as a zombie); whether it went in time."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop(dev: SoakDev) -> tuple[int | None, float]:
    """SIGTERM knfn and wait (harness: SIGKILL after a minute): its exit code and the seconds."""
    started = time.monotonic()
    code = dev.stop()
    return code, time.monotonic() - started


def keep_logs(dev: SoakDev, into: Path) -> None:
    """knfn's own log and its services' logs, copied out before the state is deleted."""
    into.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.copy(dev.log, into / "dev.log")
    with contextlib.suppress(OSError):
        shutil.copytree(dev.state_dir / "logs", into / "logs", dirs_exist_ok=True)
    print(f"logs: {into}")


async def run_load(dev: SoakDev, args: argparse.Namespace, prefix: str) -> Load:
    load = Load(dev, args, prefix)
    await load.run()
    return load


def finish(dev: SoakDev, load: Load, args: argparse.Namespace, prefix: str) -> int:
    fault, tally, samples = load.fault, load.tally, load.samples
    problems: list[str] = []
    accepted = set(tally.accepted_ids)
    recovered = fault.killed_at is None or fault.back_at is not None
    if not recovered:
        problems.append(f"{fault.service} did not answer again within the load")
    if recovered or fault.service != "postgres":
        # 1. Wait for the broker to drain, then stop knfn as Ctrl-C would.
        count, drain_s = drain(dev, prefix, accepted, args.drain_timeout)
        code, stop_s = stop(dev)
    else:
        # 1'. Postgres never came back: nothing more will be delivered. Stop knfn (which reaps
        # and stops what it started), then start the services by hand to count the events.
        code, stop_s = stop(dev)
        if fault.old_pid is not None:
            # Postgres refuses to start while the pid in its postmaster.pid exists, zombie or not.
            gone(fault.old_pid, GONE_TIMEOUT)
        done = dev.services_command("up")
        fault.restarted_by_hand = done.returncode == 0
        print(f"soak: knfn services up (by hand, to count): exit {done.returncode}", flush=True)
        if done.returncode:
            print(done.stdout + done.stderr, flush=True)
        count, drain_s = drain(dev, prefix, accepted, 0)
        if fault.restarted_by_hand:
            dev.services_command("down")  # the hand-started server is the script's, not knfn's
    # 2. Anything knfn started and left running.
    left = leftovers(samples.seen, str(dev.root))
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    # 3. Classify the failures by time.
    span = window(fault, args.grace, float(args.duration))
    injected, other = split_failures(tally.failures, span)
    if other:
        problems.append(f"{len(other)} errors outside the injected window")
    if count is None:
        problems.append("the events could not be counted (knfn's database did not answer)")
        count = Count(frozenset(), frozenset(), 0)
    delivered = len(count.delivered & accepted)
    lost = len(accepted) - delivered
    if lost:
        problems.append(f"{lost} accepted events not delivered")
    if left:
        problems.append(f"{len(left)} processes left running")
    if code not in (0, None):
        problems.append(f"knfn exited with code {code}")
    log = dev.log.read_text("utf-8", "replace") if dev.log.exists() else ""
    half = args.duration / 2
    second = [(t, v) for t, v in zip(samples.times, samples.rss, strict=True) if t >= half]
    rss = samples.rss or [float("nan")]
    result = Result(
        command=" ".join(sys.argv),
        duration_s=float(args.duration),
        fault={**asdict(fault), "recovery_s": fault.recovery_s},
        injected_window_s=list(span) if span else None,
        requests={k: dict(v) for k, v in tally.classes.items()},
        latency_ms={k: {"p50": ms(v, 50), "p99": ms(v, 99)} for k, v in tally.latency_ms.items()},
        shed=dict(tally.shed),
        errors_injected=len(injected),
        errors_not_injected=len(other),
        first_errors_not_injected=[asdict(f) for f in other[:10]],
        events_accepted=len(accepted),
        events_stored=len(count.stored),
        events_accepted_not_stored=len(accepted - count.stored),
        events_delivered=delivered,
        events_lost=lost,
        events_dead_lettered=count.dead_lettered,
        drain_s=drain_s,
        rss_mib={"start": rss[0], "min": min(rss), "max": max(rss), "end": rss[-1]},
        rss_slope_mib_per_min=slope_per_min([t for t, _ in second], [v for _, v in second]),
        rss_samples=[
            [round(t, 1), round(v, 1)] for t, v in zip(samples.times, samples.rss, strict=True)
        ],
        knfn_exit_code=code,
        stop_s=stop_s,
        left_running=[f"pid {p.pid}: {p.cmdline[:160]}" for p in left],
        tracebacks_in_log=log.count("Traceback (most recent call last)"),
        passed=not problems,
        problems=problems,
    )
    print()
    print(
        report(result, Counter(f.kind for f in injected), Counter(f.kind for f in other)),
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=600, help="seconds of load [600]")
    parser.add_argument(
        "--kill", choices=("postgres", "s3"), default="postgres", help="service [postgres]"
    )
    parser.add_argument("--kill-at", type=float, help="seconds into the load [half the duration]")
    parser.add_argument("--no-kill", action="store_true", help="no fault: the baseline run")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds after the service is back that "
        "still count as injected [10]",
    )  # fmt: skip
    parser.add_argument("--hello-concurrency", type=int, default=3, help="hello loops [3]")
    parser.add_argument("--query-rate", type=float, default=10.0, help="query per second [10]")
    parser.add_argument("--ingest-rate", type=float, default=0.5, help="PNGs per second [0.5]")
    parser.add_argument("--event-rate", type=float, default=100.0, help="events per second [100]")
    parser.add_argument(
        "--max-in-flight", type=int, default=64, help="per paced kind; beyond it shed [64]"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds [30]")
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="wait for delivery, seconds [300]"
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS, seconds [5]")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy knfn's logs into DIR at the end")
    args = parser.parse_args(argv)
    if args.kill_at is None:
        args.kill_at = args.duration / 2
    if not 0 < args.kill_at < args.duration:
        parser.error(f"--kill-at {args.kill_at:g} is not inside the load (0..{args.duration})")
    try:
        return soak(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
