"""Stand-ins that let Serving run in a unit test: no processes, no sockets, no waiting.

- :class:`ScriptedClock` is both ``Context.clock`` and ``Context.sleep``: time moves only when
  the test calls :meth:`ScriptedClock.advance`, which wakes every sleeper that is due, in order,
  with the clock reading its deadline.
- :class:`FakeReplica` plays a replica's life as the test scripts it: started, ready (only when
  told), crashed, stopped; a stopped replica may drain (it exits when told, or at its grace).
- :class:`FakeStore` keeps revisions in memory, named and digested as RevisionStore does.

They live with the tests, not in knfn: knfn is an application, so the only users of these
helpers are its own tests (structlog ships its helpers because its users test their code
against it). The protocols they satisfy are in knfn/serving/context.py (``ReplicaHandle``,
``Revisions``).
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knfn import manifests as mf
from knfn.logs import Printer
from knfn.serving import autoscaler_config, autoscaling
from knfn.serving.budget import Caps
from knfn.serving.context import Context
from knfn.serving.kpa import Autoscaler
from knfn.serving.replica import ReplicaError, ReplicaSpec
from knfn.serving.replica_env import SecretValues
from knfn.serving.revision import Revision, default_name, digest
from knfn.serving.runtime import Serving
from knfn.serving.traffic import TrafficTarget

# Enough turns of the event loop for every chain of callbacks these tests start to run out.
SETTLE_TURNS = 50


async def settle() -> None:
    """Let every task that can run, run (time does not move)."""
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)


class ScriptedClock:
    """A monotonic clock and its sleep, moved only by the test."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []  # every sleep asked for, in order
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    # Epoch seconds when the clock reads 0: its wall-clock twin, for dates in /status.
    WALL_ORIGIN = 1_800_000_000.0

    def wall(self) -> float:
        return self.WALL_ORIGIN + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + max(0.0, seconds), wake)
        self._sleepers.append(entry)
        try:
            await wake
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        """Move time on; each sleeper due wakes (and runs) with the clock at its deadline."""
        end = self.now + seconds
        await settle()
        while due := [s for s in self._sleepers if s[0] <= end and not s[1].done()]:
            when, wake = min(due, key=lambda s: s[0])
            self.now = max(self.now, when)
            wake.set_result(None)
            await settle()
        self.now = end
        await settle()


class FakeReplica:
    """A replica whose life the test scripts; it satisfies serving's ReplicaHandle."""

    def __init__(self, spec: ReplicaSpec, clock: ScriptedClock, pid: int) -> None:
        self.spec = spec
        self._clock = clock
        self._pid = pid
        self.started = False
        self.returncode: int | None = None
        self.ready_timeout: float | None = None
        self.stops: list[float] = []  # the grace of every stop asked for
        self.fail_start: BaseException | None = None
        self.drains = False  # on SIGTERM, exit only when finish() is called (or at the grace)
        self.output_drain = 0.0  # seconds stop() takes after the exit (its last output)
        self._ready = asyncio.Event()
        self._gone = asyncio.Event()
        self._finished = asyncio.Event()

    # -- what serving reads --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    @property
    def pid(self) -> int | None:
        return self._pid if self.started else None

    @property
    def exited(self) -> bool:
        return self.returncode is not None

    @property
    def stopped(self) -> bool:
        return bool(self.stops)

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started = True

    async def wait_ready(self, timeout: float) -> float:
        """As supervisor.Replica: ready, or ReplicaError when it exits or the timeout passes."""
        self.ready_timeout = timeout
        started = self._clock()
        ready = asyncio.ensure_future(self._ready.wait())
        gone = asyncio.ensure_future(self._gone.wait())
        late = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            await asyncio.wait({ready, gone, late}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, gone, late):
                task.cancel()
        if self._ready.is_set() and not self.exited:
            return self._clock() - started
        if self.exited:
            raise ReplicaError(f"{self.name} exited before it was ready")
        raise ReplicaError(f"{self.name} was not ready within {timeout:.0f}s")

    async def wait_gone(self) -> str:
        await self._gone.wait()
        return f"exited with code {self.returncode}"

    async def stop(self, grace: float) -> None:
        """SIGTERM: exit at once, or (drains) when finish() is called or grace has passed."""
        self.stops.append(grace)
        if self.drains and grace > 0 and not self.exited:
            waits = [
                asyncio.ensure_future(self._finished.wait()),
                asyncio.ensure_future(self._gone.wait()),  # killed meanwhile
                asyncio.ensure_future(self._clock.sleep(grace)),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
        # Exits when asked (0) unless it drains and is cut short (SIGKILL).
        self._exit(-9 if self.drains and not self._finished.is_set() else 0)
        if self.output_drain:
            await self._clock.sleep(self.output_drain)

    # -- what the test does ----------------------------------------------------------------
    def become_ready(self) -> None:
        self._ready.set()

    def crash(self, code: int = 1) -> None:
        self._exit(code)

    def finish(self) -> None:
        """Its last request is done: a draining replica exits now."""
        self._finished.set()

    def _exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._gone.set()


class FakeReplicas:
    """Context.new_replica: every replica made, in order; optionally each ready at once."""

    def __init__(self, clock: ScriptedClock, *, ready_at_once: bool = False) -> None:
        self.clock = clock
        self.ready_at_once = ready_at_once
        self.made: list[FakeReplica] = []
        self.start_failures: list[BaseException] = []  # the next replicas' start() raise these
        self._pids = itertools.count(4000)

    def __call__(self, spec: ReplicaSpec) -> FakeReplica:
        replica = FakeReplica(spec, self.clock, next(self._pids))
        if self.start_failures:
            replica.fail_start = self.start_failures.pop(0)
        if self.ready_at_once:
            replica.become_ready()
        self.made.append(replica)
        return replica

    def of(self, revision: str) -> list[FakeReplica]:
        return [r for r in self.made if r.spec.revision == revision]

    def live(self, revision: str | None = None) -> list[FakeReplica]:
        """Made, not stopped and not exited."""
        return [
            r
            for r in self.made
            if not r.stopped and not r.exited and revision in (None, r.spec.revision)
        ]


@dataclass
class FakeStore:
    """Revisions in memory: the same digest is the same revision, a new one is generation+1."""

    code: Path
    revisions: dict[tuple[str, str], Revision] = field(default_factory=dict)

    def ensure(
        self, namespace: str, service: str, source: Path, template: Mapping[str, Any]
    ) -> Revision:
        want = digest(self.code, template)
        mine = [
            r for r in self.revisions.values() if (r.namespace, r.service) == (namespace, service)
        ]
        for revision in mine:
            if revision.digest == want:
                return revision
        generation = len(mine) + 1
        name = (template.get("metadata") or {}).get("name") or default_name(service, generation)
        revision = Revision(namespace, service, str(name), generation, want, template, self.code)
        self.revisions[(namespace, revision.name)] = revision
        return revision

    def get(self, namespace: str, name: str) -> Revision | None:
        return self.revisions.get((namespace, name))


def service(
    name: str = "hello",
    *,
    env: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    cc: int = 0,
    traffic: tuple[TrafficTarget, ...] = (TrafficTarget(100),),
) -> mf.Service:
    """A Service whose template is what its fields say (so a change makes a new revision)."""
    annotations = dict(annotations or {})
    env_pairs = tuple((env or {}).items())
    template = {
        "metadata": {"annotations": annotations},
        "spec": {
            "containerConcurrency": cc,
            "containers": [{"env": [{"name": k, "value": v} for k, v in env_pairs]}],
        },
    }
    return mf.Service(
        name,
        "default",
        Path(f"{name}.yaml"),
        annotations,
        mf.Container(env_pairs, ()),
        container_concurrency=cc,
        timeout_seconds=300,
        response_start_timeout_seconds=300,
        template=template,
        traffic=traffic,
    )


# A revision that starts at zero, as the default project's local windows do.
AT_ZERO = {"autoscaling.knative.dev/initial-scale": "0"}
SCALER = autoscaler_config.AutoscalerConfig.from_configmap({"allow-zero-initial-scale": "true"})


@dataclass
class World:
    """A Serving wired to fakes, and the fakes to script it with."""

    serving: Serving
    clock: ScriptedClock
    replicas: FakeReplicas
    store: FakeStore
    out: io.StringIO

    @property
    def log(self) -> str:
        return self.out.getvalue()

    async def apply(self, *services: mf.Service) -> None:
        await self.serving.apply(mf.Manifests(tuple(services), {}, {}, ()))
        await settle()


async def _inline(fn: Callable[[], None]) -> None:
    fn()


def world(tmp_path: Path, *, ready_at_once: bool = False) -> World:
    """Serving with a scripted clock, fake replicas and revisions in memory."""
    clock = ScriptedClock()
    replicas = FakeReplicas(clock, ready_at_once=ready_at_once)
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "main.py").write_text("def hello(request):\n    return 'hi'\n")
    store = FakeStore(code)
    out = io.StringIO()
    ports = itertools.count(20000)
    ctx = Context(
        printer=Printer(out),
        store=store,
        values=SecretValues({}, {}, tmp_path / "secrets.json"),
        proxy_url="http://127.0.0.1:9",
        host_env={},
        argv=("functions-framework",),
        new_decider=lambda svc: Autoscaler(
            autoscaling.resolve_revision_scaling(svc.annotations, svc.container_concurrency, SCALER)
        ),
        caps=Caps(20, 20),
        functions_dir=tmp_path,
        new_replica=replicas,
        clock=clock,
        wall_clock=clock.wall,
        sleep=clock.sleep,
        pick_port=lambda: next(ports),
        memory=lambda _reserve: None,  # no memory bound: this machine's /proc stays out of it
        offload=_inline,
    )
    serving = Serving(ctx, mf.Manifests((), {}, {}, ()))
    return World(serving, clock, replicas, store, out)
