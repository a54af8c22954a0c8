"""The measured checks: the function started as a replica, the way `knfn dev` spawns one.

Only running tells whether a function binds $PORT, how long it takes from start to ready,
whether SIGTERM ends it within the grace period with the request in flight answered, whether
it writes files, and whether its answers depend on earlier requests. So the function is
copied as its revision's snapshot would be, started with its replica environment
(replica_env.py: the manifests' env, Secrets filled with their placeholders from git), spawned
(not forked from a template: a fork would hide its import time) and stopped by knfn's own
Replica (SIGTERM to the group, the grace period, SIGKILL). HOME and TMPDIR are empty folders of
the check's own; a file that appears in the code's folder or in HOME was written outside /tmp.

In Knative the grace period is the revision's timeoutSeconds (knative/serving,
pkg/reconciler/revision/resources/deploy.go, makePodSpec: TerminationGracePeriodSeconds); the
check waits at most ``Limits.stop`` of it, since a function that drains one small request and
still needs longer than that will not be quick to dispose of anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from knfn import ports
from knfn.check.source import Subject
from knfn.logs import Printer, PrintFilter
from knfn.manifests import Manifests
from knfn.serving.replica import Replica, ReplicaError, ReplicaSpec
from knfn.serving.replica_env import SecretValues, resolve
from knfn.serving.revision import source_files

PROBES = 2  # identical requests in a row; the first and the last answers are compared
SETTLE = 0.3  # seconds for the server to take up the request in flight before SIGTERM
# The request in flight at SIGTERM: one the server answers without the function's backing
# services (functions-framework answers /robots.txt itself), so that what is measured is the
# drain, not a database timeout. Sent in two halves, the signal in between.
IN_FLIGHT = (b"GET /robots.txt HTTP/1.1\r\n", b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
IGNORED = frozenset({"__pycache__"})  # bytecode the interpreter writes beside the code


@dataclass(frozen=True)
class Limits:
    start: float = 30.0  # seconds to wait for ready at all (port binding)
    ready: float = 3.0  # ready later than this is a slow start (disposability)
    stop: float = 10.0  # seconds given to exit after SIGTERM, at most the grace period
    request: float = 10.0  # seconds an answer may take


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer at all
    body: bytes = b""
    error: str = ""

    def summary(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        text = self.body.decode("utf-8", "replace").strip().replace("\n", " ")
        return f"{self.status} {text[:60]!r}"


@dataclass(frozen=True)
class Measurement:
    port: int
    grace: float
    ready_seconds: float | None = None  # None: never ready
    # Of ready_seconds, the time it waited for a CPU (a busy machine, not a slow function).
    queued_seconds: float = 0.0
    start_problem: str = ""
    answers: tuple[Answer, ...] = ()
    fresh: Answer | None = None  # a new replica's first answer, when the answers differed
    in_flight: Answer | None = None  # the answer to the request in flight at SIGTERM
    exit_seconds: float | None = None  # from SIGTERM to exit; None: killed at the limit
    written: tuple[str, ...] = ()  # "code/<path>" or "home/<path>"
    output: tuple[str, ...] = field(default=(), repr=False)


class Lines:
    """Every line the replica printed (a knfn.logs LogSink)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, prefix: str, text: str) -> None:
        self.lines.append(text)


def queued(pid: int | None) -> float:
    """Seconds the process's main thread has waited on a run queue (/proc/<pid>/schedstat:
    on-CPU ns, run-queue wait ns, timeslices); 0 where the kernel does not say."""
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Path -> (size, mtime_ns) of every file under root, bytecode caches left out."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not IGNORED & set(rel.parts):
            stat = path.stat()
            out[str(rel)] = (stat.st_size, stat.st_mtime_ns)
    return out


def changed(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> list[str]:
    return sorted(p for p, st in after.items() if before.get(p) != st)


def probe_request(signature: str) -> bytes:
    """The same request each time: GET / for HTTP, a fixed CloudEvent for event functions."""
    if signature == "cloudevent":
        body = b"{}"
        return (
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"ce-specversion: 1.0\r\nce-id: knfn-check-1\r\nce-source: /knfn/check\r\n"
            b"ce-type: dev.knfn.check.probe\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body)
        ) + body
    return b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def _read_answer(reader: asyncio.StreamReader, timeout: float) -> Answer:
    try:
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError) as exc:
        return Answer(None, error=repr(exc))
    head, _, body = raw.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return Answer(None, error="the connection closed without an answer")
    return Answer(int(parts[1]), body)


async def ask(port: int, request: bytes, timeout: float) -> Answer:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError) as exc:
        return Answer(None, error=repr(exc))
    try:
        writer.write(request)
        return await _read_answer(reader, timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class Run:
    """One function's measured run, in a work folder of its own."""

    def __init__(
        self,
        subject: Subject,
        manifests: Manifests,
        work: Path,
        host_env: Mapping[str, str],
        argv: tuple[str, ...],
        limits: Limits,
    ) -> None:
        self.subject, self.manifests, self.limits, self.argv = subject, manifests, limits, argv
        self.code, self.home, self.tmp = work / "code", work / "home", work / "tmp"
        for folder in (self.home, self.tmp):
            folder.mkdir(parents=True)
        for path in source_files(subject.source.folder):
            dest = self.code / path.relative_to(subject.source.folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        self.code.mkdir(exist_ok=True)
        self.host_env = {**host_env, "HOME": str(self.home), "TMPDIR": str(self.tmp)}
        placeholders = {k: v for _, data in subject.secrets.values() for k, v in data.items()}
        self.values = SecretValues(placeholders, {}, work / "secrets.json")
        self.lines = Lines()
        self.printer = Printer(io.StringIO(), files=self.lines, shows=PrintFilter.parse("none"))
        self.proxy = f"http://127.0.0.1:{ports.free_port()}"  # nothing listens: calls fail fast
        env = dict(subject.service.container.env)
        self.request = probe_request(env.get("FUNCTION_SIGNATURE_TYPE", "http"))

    def replica(self, index: int) -> Replica:
        port = ports.free_port()
        env = resolve(
            self.subject.service,
            self.manifests,
            self.values,
            revision=f"{self.subject.name}-check",
            port=port,
            proxy_url=self.proxy,
            host_env=self.host_env,
        )
        spec = ReplicaSpec(
            self.subject.name,
            "check",
            index,
            self.argv,
            self.code,
            env,
            port,
            self.subject.service.container.readiness_path,
        )
        return Replica(spec, self.printer)

    async def start(self, replica: Replica) -> tuple[float | None, float, str]:
        """Seconds to ready (None: never), of them the seconds queued for a CPU, the problem."""
        started = time.monotonic()
        await replica.start()
        try:
            await replica.wait_ready(self.limits.start)
        except ReplicaError as exc:
            await replica.stop(grace=0)
            last = self.lines.lines[-1] if self.lines.lines else "no output"
            return None, 0.0, f"{exc}; last line: {last[:120]}"
        return time.monotonic() - started, queued(replica.pid), ""

    async def measure(self, started: asyncio.Semaphore) -> Measurement:
        """Start, probe, stop with a request in flight; a second replica when answers differ.
        The semaphore bounds how many functions start at once (start times stay honest)."""
        before = snapshot(self.code)
        grace = float(min(self.subject.service.timeout_seconds, self.limits.stop))
        first = self.replica(1)
        async with started:
            ready, waited, problem = await self.start(first)
        port = first.spec.port
        if ready is None:
            return self._done(Measurement(port, grace, None, 0.0, problem), before)
        answers = [await ask(port, self.request, self.limits.request) for _ in range(PROBES)]
        in_flight, exit_seconds = await self.stop_in_flight(first, grace)
        fresh = None
        if answers[0] != answers[-1]:
            second = self.replica(2)
            async with started:
                second_ready, _, _ = await self.start(second)
            if second_ready is not None:
                fresh = await ask(second.spec.port, self.request, self.limits.request)
            await second.stop(grace)
        m = Measurement(
            port, grace, ready, waited, "", tuple(answers), fresh, in_flight, exit_seconds
        )
        return self._done(m, before)

    def _done(self, m: Measurement, before: Mapping[str, tuple[int, int]]) -> Measurement:
        written = [f"code/{p}" for p in changed(before, snapshot(self.code))]
        written += [f"home/{p}" for p in changed({}, snapshot(self.home))]
        return Measurement(
            m.port,
            m.grace,
            m.ready_seconds,
            m.queued_seconds,
            m.start_problem,
            m.answers,
            m.fresh,
            m.in_flight,
            m.exit_seconds,
            tuple(written),
            tuple(self.lines.lines),
        )

    async def stop_in_flight(self, replica: Replica, grace: float) -> tuple[Answer, float | None]:
        """Half a request sent, SIGTERM, the rest sent: is it answered, and how soon does the
        process exit? The server has taken the connection up and is reading it when the
        signal comes, as with a request the queue-proxy is still passing on."""
        head, rest = IN_FLIGHT
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", replica.spec.port)
        except OSError as exc:
            await replica.stop(grace)
            return Answer(None, error=repr(exc)), None
        writer.write(head)
        await asyncio.sleep(SETTLE)
        signalled = time.monotonic()
        stopping = asyncio.create_task(replica.stop(grace))
        await asyncio.sleep(0.1)
        try:
            writer.write(rest)
            answer = await _read_answer(reader, grace + 1)
        finally:
            writer.close()
        while not stopping.done() and not replica.exited:
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - signalled
        await stopping
        # Exited by itself, or killed when the grace period ran out (then: None).
        exit_seconds = elapsed if elapsed < grace else None
        return answer, exit_seconds
