"""The load loop: requests on aiohttp, one row a second, /status polled alongside.

Two ways to put load on a Service, as load generators do:

* closed loop (``-c N``): N clients, each sending its next request when the last one is
  answered, for the duration; the rate is whatever the Service sustains;
* open loop (``--rps R``): requests go out at fixed times ``i / R`` (knfn/load/schedule.py),
  however many are still unanswered; a request sent late is timed from its due time.

The shell owns the clock, the sockets and Ctrl-C; what is counted and how lives in the pure
modules (knfn/load/stats.py, series.py). Everything is bounded: the number of requests by the
duration (and the rate), each request by ``--timeout``, the tail by ``--tail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from knfn import invoke
from knfn.load import LoadError, LoadUsageError, schedule
from knfn.load.series import RevisionSample, Row, revisions_of
from knfn.load.stats import Outcome, Timeline
from knfn.routing import BROKER_INGRESS_TARGET, Target, parse_host

USER_AGENT = "knfn-load"
ADMIN_HOST = "127.0.0.1"
STATUS_INTERVAL = 1.0  # seconds between two /status polls
STATUS_TIMEOUT = 2.0
# After a Ctrl-C, answers still awaited get this long before they are abandoned.
STOP_GRACE = 2.0
# With --tail, recording ends early once the Service has been at zero this many seconds.
ZERO_SECONDS = 3


@dataclass(frozen=True)
class LoadRequest:
    """The one request a run repeats, exactly as it goes on the wire."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    routed: Target  # the Service (or tag) the Host routes to

    @property
    def host(self) -> str:
        return next(value for name, value in self.headers if name == "Host")


def build_request(
    service: str,
    *,
    port: int,
    method: str | None,
    path: str | None,
    data: invoke.Payload | None,
    host: str | None,
) -> LoadRequest:
    """The request for SERVICE as ``knfn invoke`` builds it (knfn/invoke.py), with the Host
    replaced by --host when given (a tag's host, say)."""
    dest = invoke.resolve_target(service)
    if dest.broker:
        raise LoadUsageError(
            f"SERVICE {service!r} is a broker; knfn load puts load on a Service "
            "(send events with knfn invoke --event)"
        )
    built = invoke.build(
        invoke.Options(target=service, port=port, method=method, path=path, data=data)
    )
    routed = parse_host(host if host is not None else built.headers[0][1])
    if host is not None and (routed is None or routed == BROKER_INGRESS_TARGET):
        raise LoadUsageError(
            f"--host {host!r} is not a Service host the gateway routes: write "
            "<service>.<namespace> or <tag>-<service>.<namespace> (e.g. candidate-hello.default)"
        )
    assert routed is not None  # resolve_target accepted it
    headers: list[tuple[str, str]] = []
    for name, value in built.headers:
        if name == "Host" and host is not None:
            value = host.lower()
        elif name == "User-Agent":
            value = USER_AGENT
        elif name == "Content-Length":
            continue  # aiohttp writes it for the body it sends
        headers.append((name, value))
    return LoadRequest(built.method, built.url, tuple(headers), built.body, routed)


@dataclass(frozen=True)
class LoadPlan:
    """What to send, how hard and for how long (built once at the CLI edge)."""

    request: LoadRequest
    duration: float
    concurrency: int = 50
    rps: float | None = None  # set: open loop at this rate; concurrency is then unused
    timeout: float = 60.0
    admin_port: int = 8081
    tail: float = 0.0  # seconds of replicas recorded after the load, until zero

    @property
    def gateway(self) -> tuple[str, int]:
        host, _, port = self.request.url.split("/")[2].partition(":")
        return host, int(port)


class View(Protocol):
    """Where each second goes while the load runs (knfn/load/view.py)."""

    def update(self, row: Row, timeline: Timeline) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass
class Result:
    """A finished run: every row, the totals, and how it ended."""

    plan: LoadPlan
    rows: list[Row]
    timeline: Timeline
    load_seconds: float  # from the first request to the last answer
    interrupted: bool = False
    status_seen: bool = False


@dataclass
class StatusPoller:
    """The target's revisions from /status, fetched once a second; keeps the latest."""

    session: aiohttp.ClientSession
    admin_port: int
    target: Target
    note: Callable[[str], None]
    latest: tuple[RevisionSample, ...] = ()
    seen: bool = False
    _warned: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{ADMIN_HOST}:{self.admin_port}/status"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.note(message)

    async def fetch(self) -> None:
        try:
            async with self.session.get(self.url) as resp:
                data: dict[str, Any] = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._warn_once(
                "unreachable",
                f"no /status at {self.url} ({type(exc).__name__}); replicas are not shown "
                "(is --admin-port / KNFN_ADMIN_PORT the one knfn dev uses?)",
            )
            return
        self.latest = revisions_of(data, self.target)
        if self.latest:
            self.seen = True
        else:
            self._warn_once(
                "unknown",
                f"/status lists no Service for {self.target.service}.{self.target.namespace}",
            )

    async def run(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        k = 0
        while True:
            k += 1
            # Half a second before each row, so every row gets a fresh sample.
            await asyncio.sleep(max(0.0, start + k * STATUS_INTERVAL - 0.5 - loop.time()))
            await self.fetch()


async def _gateway_answers(host: str, port: int) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        raise LoadError(
            f"nothing answers at {host}:{port}: is `knfn dev` running with its gateway on "
            f"port {port} (--port, env KNFN_PORT)?"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _Run:
    """The state of one run, shared by the senders, the ticker and the poller."""

    def __init__(self, plan: LoadPlan, session: aiohttp.ClientSession, start: float) -> None:
        self.plan = plan
        self.session = session
        self.start = start
        self.loop = asyncio.get_running_loop()
        self.timeline = Timeline()
        self.in_flight = 0
        self.stop = asyncio.Event()
        self.requests: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self.loop.time() - self.start

    async def send(self, intended: float) -> None:
        req = self.plan.request
        sent = self.now()
        self.timeline.record_sent(sent)
        self.in_flight += 1
        status: int | None = None
        failure: str | None = None
        try:
            async with self.session.request(
                req.method, req.url, headers=req.headers, data=req.body or None
            ) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            failure = "timeout"
        except aiohttp.ClientError:
            failure = "connection"
        finally:
            self.in_flight -= 1
        self.timeline.record(Outcome(intended, sent, self.now(), status, failure))

    async def closed_loop(self) -> None:
        async def client() -> None:
            while not self.stop.is_set() and self.now() < self.plan.duration:
                await self.send(self.now())

        await asyncio.gather(*(client() for _ in range(self.plan.concurrency)))

    async def open_loop(self, rate: float) -> None:
        times = list(schedule.arrivals(rate, self.plan.duration))
        done = 0
        while done < len(times) and not self.stop.is_set():
            ready = schedule.due(times, done, self.now())
            for at in times[done:ready]:
                task = self.loop.create_task(self.send(at))
                self.requests.add(task)
                task.add_done_callback(self.requests.discard)
            done = ready
            if done < len(times):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), times[done] - self.now())
        if self.requests:
            await asyncio.wait(set(self.requests))

    async def load(self) -> float:
        """Run the load to its end (or a stop); the seconds from start to the last answer."""
        rate = self.plan.rps
        work = self.closed_loop() if rate is None else self.open_loop(rate)
        task = self.loop.create_task(work)
        stopped = self.loop.create_task(self.stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done():
            # Stopped: answers still on their way get a moment, then are abandoned.
            await asyncio.wait([task], timeout=STOP_GRACE)
            task.cancel()
            for pending in list(self.requests):
                pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            task.result()
        return self.now()


async def run(plan: LoadPlan, view: View) -> Result:
    """Put the plan's load on its Service, one row a second to the view; the result."""
    host, port = plan.gateway
    await _gateway_answers(host, port)
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=plan.timeout)
    connector = aiohttp.TCPConnector(limit=0)
    admin_timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        aiohttp.ClientSession(timeout=admin_timeout) as admin,
    ):
        poller = StatusPoller(admin, plan.admin_port, plan.request.routed, view.note)
        await poller.fetch()
        start = loop.time()
        state = _Run(plan, session, start)
        rows = [Row(state.timeline.second(0), 0, poller.latest)]
        interrupted = _on_interrupt(loop, state.stop)
        polling = loop.create_task(poller.run(start))
        loading = loop.create_task(state.load())
        try:
            load_seconds = await _tick(state, poller, view, rows, loading)
        finally:
            polling.cancel()
            loading.cancel()
            _restore_interrupt(loop)
        with contextlib.suppress(asyncio.CancelledError):
            await polling
    return Result(plan, rows, state.timeline, load_seconds, interrupted(), poller.seen)


async def _tick(
    state: _Run,
    poller: StatusPoller,
    view: View,
    rows: list[Row],
    loading: asyncio.Task[float],
) -> float:
    """One row each whole second until the load has ended and the tail is recorded."""
    loop, plan = state.loop, state.plan
    k = 0
    load_seconds: float | None = None
    at_zero = 0
    while True:
        k += 1
        wake = state.start + k
        if load_seconds is None:
            await asyncio.wait([loading], timeout=max(0.0, wake - loop.time()))
            if loading.done():
                load_seconds = loading.result()
                if plan.tail <= 0 or state.stop.is_set():
                    # The last second is a part one, written at once rather than waited for.
                    _emit(rows, view, state, Row(state.timeline.second(k), 0, poller.latest))
                    return load_seconds
                await asyncio.sleep(max(0.0, wake - loop.time()))
        else:
            stopped = loop.create_task(state.stop.wait())
            await asyncio.wait([stopped], timeout=max(0.0, wake - loop.time()))
            stopped.cancel()
            if state.stop.is_set():
                return load_seconds
        row = Row(state.timeline.second(k), state.in_flight, poller.latest)
        _emit(rows, view, state, row)
        if load_seconds is not None:
            zero = bool(row.revisions) and all(
                r.desired == 0 and r.ready == 0 for r in row.revisions
            )
            at_zero = at_zero + 1 if zero else 0
            if at_zero >= ZERO_SECONDS or k >= load_seconds + plan.tail:
                return load_seconds


def _emit(rows: list[Row], view: View, state: _Run, row: Row) -> None:
    rows.append(row)
    view.update(row, state.timeline)


def _on_interrupt(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Callable[[], bool]:
    """The first Ctrl-C (or SIGTERM) ends the load gracefully, so the summary and files are
    still written; a second one interrupts as usual."""
    hit: list[bool] = []

    def first() -> None:
        hit.append(True)
        stop.set()
        _restore_interrupt(loop)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, first)
        loop.add_signal_handler(signal.SIGTERM, first)
    return lambda: bool(hit)


def _restore_interrupt(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
