"""Knative Serving on one machine: revisions, their replicas and scale, and the routes to them.

Per Service: the revision of its current code and template (a new one when either changes), the
revisions that spec.traffic names, and the resolved split. Per revision: a throttler (queue-proxy
and activator rules), an autoscaler deciding its scale, and replica processes. Revisions that no
route reaches any more are drained and stopped, as Knative scales unreachable revisions to zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from knfn import manifests as mf
from knfn import metrics
from knfn.logs import Printer
from knfn.ports import free_port
from knfn.routing import Target
from knfn.serving import budget, traffic
from knfn.serving.budget import Caps as Caps  # Context's field type, re-exported
from knfn.serving.kpa import Autoscaler
from knfn.serving.replica import ReplicaError, ReplicaSpec
from knfn.serving.replica_env import SecretValues, resolve
from knfn.serving.revision import Revision, digest
from knfn.serving.template import Template, start_mode
from knfn.serving.throttler import Endpoint, Throttler

READY_TIMEOUT = 60.0
CRASH_BACKOFF_MAX = 30.0
# A replica that lived this long resets the crash backoff.
HEALTHY_AFTER = 10.0
# How often the memory a replica of each revision takes is measured (knfn/serving/budget.py).
MEASURE_INTERVAL = 5.0


class ReplicaHandle(Protocol):
    """What serving uses of a replica: knfn.serving.replica.Replica, or a fake in unit tests."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def exited(self) -> bool: ...
    async def start(self) -> None: ...
    async def wait_ready(self, timeout: float) -> float:
        """Until ready; raises ReplicaError when it exits first or is not ready in time."""
        ...

    async def wait_gone(self) -> str:
        """Until it exits or cannot be read any more; which, in words."""
        ...

    async def stop(self, grace: float) -> None: ...


class Revisions(Protocol):
    """Where revisions are recorded: knfn.serving.revision.RevisionStore (Postgres)."""

    def ensure(
        self, namespace: str, service: str, source: Path, template: Mapping[str, Any]
    ) -> Revision: ...
    def get(self, namespace: str, name: str) -> Revision | None: ...


@dataclass(eq=False)
class ReplicaSlot:
    replica: ReplicaHandle
    started: float
    endpoint: Endpoint | None = None
    stopping: bool = False


@dataclass(frozen=True)
class Context:
    """What every revision runtime needs from the outside, built once by dev."""

    printer: Printer
    store: Revisions
    values: SecretValues
    proxy_url: str
    host_env: Mapping[str, str]
    argv: tuple[str, ...]
    new_decider: Callable[[mf.Service], Autoscaler]
    caps: Caps
    functions_dir: Path
    new_replica: Callable[[ReplicaSpec], ReplicaHandle]  # supervisor.Replica, as new_decider
    clock: Callable[[], float] = time.monotonic
    # Injected with the clock so that serving is tested without processes, sockets or waiting
    # (tests/unit/fakes.py).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    pick_port: Callable[[], int] = free_port
    templates: bool = False  # fork replicas from a template per revision (knfn/serving/template.py)
    # MemAvailable and the reserve kept from it (knfn/serving/budget.py); None: no memory bound.
    memory: Callable[[budget.Reserve], budget.Memory | None] = budget.available_memory
    # Where blocking reads (a /proc walk per replica) run: a worker thread, or inline in tests.
    offload: Callable[[Callable[[], None]], Awaitable[None]] = field(
        default=lambda fn: asyncio.get_running_loop().run_in_executor(None, fn)
    )


class RevisionRuntime:
    """One revision: its throttler, autoscaler and replica processes."""

    def __init__(self, serving: Serving, service: mf.Service, revision: Revision) -> None:
        self.serving = serving
        self.service = service
        self.revision = revision
        self.ctx = serving.ctx
        self.decider = self.ctx.new_decider(service)
        self.throttler = Throttler(
            service.container_concurrency, on_cold=self.poke, clock=self.ctx.clock
        )
        self.slots: list[ReplicaSlot] = []
        self.desired = self.decider.initial_pods()
        self.routable = True
        self.capped_at: int | None = None
        self.capped_by: str | None = None  # what holds it below desired (knfn/serving/budget.py)
        self._next_index = 1
        self._backoff = 0.0
        self._not_before = 0.0
        self._cold_since: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._labels = (service.namespace, service.name, revision.name)
        self.template = self._new_template()

    # -- what the gateway reads ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.revision.name

    @property
    def timeout_seconds(self) -> float:
        return float(self.service.timeout_seconds)

    @property
    def response_start_timeout_seconds(self) -> float:
        return float(self.service.response_start_timeout_seconds)

    @property
    def labels(self) -> tuple[str, str, str]:
        return self._labels

    # -- scale ------------------------------------------------------------------------------
    @property
    def ready(self) -> int:
        return sum(1 for s in self.slots if s.endpoint is not None and not s.stopping)

    @property
    def active(self) -> int:
        return sum(1 for s in self.slots if not s.stopping)

    def poke(self) -> None:
        """A request arrived with no replica ready: decide now, not at the next tick."""
        now = self.ctx.clock()
        if self._cold_since is None:
            self._cold_since = now
        self.decider.poke(now)
        self.desired = max(self.desired, self.decider.decide(now, self.ready).desired_pods)
        self.reconcile()

    def record(self, now: float) -> None:
        concurrency, requests = self.throttler.meter.take()
        self.decider.record(now, concurrency, requests)

    def decide(self, now: float) -> None:
        self.desired = self.decider.decide(now, self.ready).desired_pods if self.routable else 0
        self.reconcile()

    @property
    def key(self) -> str:
        return f"{self.service.namespace}/{self.revision.name}"

    @property
    def activating(self) -> bool:
        """No replica ready, and a request waits for one or it is to replace a serving revision."""
        return self.ready == 0 and (self._cold_since is not None or self.serving.replacing(self))

    def demand(self) -> budget.Demand:
        return budget.Demand(
            self.key, self.desired if self.routable else 0, self.active, self.ready,
            self.throttler.meter.value, self.activating, self.serving.costs.of(self.key),
        )  # fmt: skip

    def reconcile(self) -> None:
        """Start or retire replicas until the active count is what the replica budget allows."""
        allowed = self.serving.admit(self)
        now = self.ctx.clock()
        while self.active < allowed and now >= self._not_before:
            self._spawn()
        while self.active > max(allowed, 0):
            self._retire(self._victim())

    def yield_replica(self) -> None:
        """Give one replica up for another revision's activation; it drains gracefully."""
        if self.active:
            self._retire(self._victim())

    def _victim(self) -> ReplicaSlot:
        live = [s for s in self.slots if not s.stopping]
        starting = [s for s in live if s.endpoint is None]
        if starting:
            return starting[-1]
        return min(live, key=lambda s: s.endpoint.in_flight if s.endpoint else 0)

    def _spawn(self) -> None:
        index = self._next_index
        self._next_index += 1
        port = self.ctx.pick_port()
        env = self._env(port)
        spec = ReplicaSpec(
            self.service.name,
            self.revision.name,
            index,
            self.ctx.argv,
            self.revision.code,
            env,
            port,
            self.service.container.readiness_path,
            template=self.template,
        )
        slot = ReplicaSlot(self.ctx.new_replica(spec), self.ctx.clock())
        self.slots.append(slot)
        self._track(self._run(slot))

    def _env(self, port: int) -> dict[str, str]:
        return resolve(
            self.service,
            self.serving.manifests,
            self.ctx.values,
            revision=self.revision.name,
            port=port,
            proxy_url=self.ctx.proxy_url,
            host_env=self.ctx.host_env,
        )

    # -- the template replicas are forked from (knfn/serving/template.py) ----------------------
    def _new_template(self) -> Template | None:
        """Started with the revision, kept at zero, stopped with it; None: spawn replicas."""
        if not self.ctx.templates or start_mode(self.service.annotations) == "spawn":
            return None
        name = f"{self.service.name}/{self.revision.name}/template"
        template = Template(
            name, self.ctx.argv[0], self.revision.code, self._env(0), self.ctx.printer
        )
        template.start()
        return template

    def drop_template(self) -> None:
        if self.template is not None:
            self._track(self.template.stop())

    def _retire(self, slot: ReplicaSlot) -> None:
        slot.stopping = True
        if slot.endpoint is not None:
            self.throttler.remove(slot.endpoint)
        self._track(slot.replica.stop(grace=self.timeout_seconds))

    async def _run(self, slot: ReplicaSlot) -> None:
        replica = slot.replica
        try:
            await replica.start()
            await replica.wait_ready(READY_TIMEOUT)
        except (ReplicaError, OSError) as exc:
            if slot.stopping:  # retired while starting: it exited because it was asked to
                return
            self.ctx.printer.line("knfn", f"{replica.name}: {exc}")
            await self._crashed(slot)
            return
        if slot.stopping:
            return
        slot.endpoint = self.throttler.add(replica.url)
        if self._cold_since is not None:
            metrics.COLD_STARTS.labels(*self._labels).inc()
            metrics.COLD_START_SECONDS.labels(*self._labels).observe(
                self.ctx.clock() - self._cold_since
            )
            self._cold_since = None
        self.serving.revision_ready(self)
        # Exited, or its output cannot be read (then it would block on a full pipe while still
        # accepting connections): either way it has failed and is replaced.
        gone = await replica.wait_gone()
        if not slot.stopping:
            self.ctx.printer.line("knfn", f"{replica.name} {gone}")
            await self._crashed(slot)

    async def _crashed(self, slot: ReplicaSlot) -> None:
        """Take the replica out, back off, and let reconcile start a replacement."""
        metrics.REPLICA_CRASHES.labels(*self._labels).inc()
        if slot.endpoint is not None:
            self.throttler.remove(slot.endpoint)
        slot.stopping = True
        await slot.replica.stop(grace=0)
        # forget_stopped may have dropped it meanwhile: it exits before its output is drained.
        if slot in self.slots:
            self.slots.remove(slot)
        lived = self.ctx.clock() - slot.started
        self._backoff = (
            0.5 if lived > HEALTHY_AFTER else min(CRASH_BACKOFF_MAX, max(0.5, self._backoff * 2))
        )
        self._not_before = self.ctx.clock() + self._backoff
        await self.ctx.sleep(self._backoff)
        self.reconcile()

    def forget_stopped(self) -> None:
        self.slots = [s for s in self.slots if not (s.stopping and s.replica.exited)]

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float | None = None) -> None:
        """Retire every replica and wait for them to go (within grace, default timeoutSeconds)."""
        self.routable = False
        for slot in [s for s in self.slots if not s.stopping]:
            self._retire(slot)
        grace = self.timeout_seconds if grace is None else grace
        await asyncio.gather(*(s.replica.stop(grace) for s in self.slots),
                             return_exceptions=True)  # fmt: skip
        if self.template is not None:
            await self.template.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self, percent: int, tag: str | None) -> dict[str, Any]:
        return {
            "name": self.revision.name,
            "generation": self.revision.generation,
            "desired_replicas": self.desired,
            "ready_replicas": self.ready,
            "traffic_percent": percent,
            "tag": tag,
            "routable": self.routable,
            "in_flight": self.throttler.meter.value,
            "waiting": self.throttler.waiting,
            "container_concurrency": self.service.container_concurrency,
            "capped_at": self.capped_at,
            "capped_by": self.capped_by,
            "replicas": [
                {
                    "name": s.replica.name,
                    "url": s.replica.url,
                    "pid": s.replica.pid,
                    "ready": s.endpoint is not None and not s.stopping,
                    "in_flight": s.endpoint.in_flight if s.endpoint else 0,
                }
                for s in self.slots
                if not s.stopping
            ],
        }


@dataclass
class ServiceState:
    service: mf.Service
    latest: RevisionRuntime
    latest_ready: str | None = None
    revisions: dict[str, RevisionRuntime] = field(default_factory=dict)
    split: traffic.Split = field(default_factory=lambda: traffic.resolve([], None))

    @property
    def url(self) -> str:
        return f"http://{self.service.name}.{self.service.namespace}.svc.cluster.local"


class Serving:
    """Every Service of the manifests, kept running as Knative would run it."""

    def __init__(self, ctx: Context, manifests: mf.Manifests) -> None:
        self.ctx = ctx
        self.manifests = manifests
        self.services: dict[tuple[str, str], ServiceState] = {}
        self._hosts: dict[tuple[str, str], tuple[ServiceState, str | None]] = {}
        # Revisions no route reaches any more whose replicas still drain: stop reaches them.
        self._draining: set[RevisionRuntime] = set()
        self.costs = budget.Costs(ctx.caps.replica_estimate)
        self.memory: budget.Memory | None = None
        self._binding = budget.BindingLog()

    # -- configuration ------------------------------------------------------------------------
    async def apply(self, manifests: mf.Manifests) -> None:
        """Bring the runtime to these manifests: new revisions, traffic, removed Services."""
        loop = asyncio.get_running_loop()
        self.manifests = manifests
        wanted = {(s.namespace, s.name): s for s in manifests.services}
        for key in [k for k in self.services if k not in wanted]:
            gone = self.services.pop(key)
            self._draining.update(gone.revisions.values())
            await asyncio.gather(*(rt.stop() for rt in gone.revisions.values()))
        # Every Service's revision at once: each is a digest and maybe a database round trip.
        found = await asyncio.gather(*(
            loop.run_in_executor(None, self._revision, svc, self.services.get(key))
            for key, svc in wanted.items()
        ))  # fmt: skip
        for (key, svc), revision in zip(wanted.items(), found, strict=True):
            existing = self.services.get(key)
            runtime = existing.revisions.get(revision.name) if existing else None
            if runtime is None:
                runtime = RevisionRuntime(self, svc, revision)
            state = existing or ServiceState(svc, runtime)
            self.services[key] = state
            state.service, state.latest = svc, runtime
            state.revisions[revision.name] = runtime
            for target in svc.traffic:
                name = target.revision_name
                if name and name not in state.revisions:
                    state.revisions[name] = await self._pinned(svc, name)
            if runtime.desired == 0 and state.latest_ready is None:
                state.latest_ready = runtime.name  # nothing to wait for: scale from zero
            self._route(state)
        for state in self.services.values():
            for rt in state.revisions.values():
                rt.reconcile()
        self._index_hosts()

    def _revision(self, svc: mf.Service, existing: ServiceState | None) -> Revision:
        """The revision of svc's code and template: one already running when the digest is
        theirs (a hot reload then costs no database round trip per unchanged Service), else
        the store's, new if need be."""
        folder = self.ctx.functions_dir / svc.name
        if existing is not None:
            want = digest(folder, svc.template)
            for rt in existing.revisions.values():
                if rt.revision.digest == want:
                    return rt.revision
        return self.ctx.store.ensure(svc.namespace, svc.name, folder, svc.template)

    async def _pinned(self, svc: mf.Service, name: str) -> RevisionRuntime:
        loop = asyncio.get_running_loop()
        revision = await loop.run_in_executor(None, self.ctx.store.get, svc.namespace, name)
        if revision is None or revision.service != svc.name:
            raise mf.ManifestError(
                svc.source, f"Service {svc.name}", "spec.traffic",
                f"revision {name!r} does not exist (knfn knows the ones it has run)",
            )  # fmt: skip
        return RevisionRuntime(self, mf.at_template(svc, revision.template), revision)

    def revision_ready(self, runtime: RevisionRuntime) -> None:
        """A replica became ready: a new latest revision takes its traffic from now on."""
        state = self.services.get((runtime.service.namespace, runtime.service.name))
        if state is None or state.latest is not runtime or state.latest_ready == runtime.name:
            return
        state.latest_ready = runtime.name
        self._route(state)
        self._index_hosts()

    def _route(self, state: ServiceState) -> None:
        state.split = traffic.resolve(state.service.traffic, state.latest_ready)
        reachable = {name for name, pct in state.split.weights if pct} | set(
            state.split.tags.values()
        )
        # The latest revision stays: while it comes up it has no traffic yet, and once ready
        # its autoscaler takes it to zero if nothing reaches it.
        reachable.add(state.latest.name)
        for name, rt in list(state.revisions.items()):
            rt.routable = name in reachable
            if not rt.routable:
                rt.reconcile()
                if not rt.active and not rt.throttler.meter.value:
                    del state.revisions[name]
                    rt.drop_template()
                    self._draining.add(rt)

    def _index_hosts(self) -> None:
        hosts: dict[tuple[str, str], tuple[ServiceState, str | None]] = {}
        for (ns, name), state in self.services.items():
            hosts[(ns, name)] = (state, None)
            for tag in state.split.tags:
                hosts[(ns, f"{tag}-{name}")] = (state, tag)
        self._hosts = hosts

    # -- the gateway's questions -------------------------------------------------------------
    def route(self, target: Target) -> RevisionRuntime | None:
        """The revision a request for target goes to: by tag, else drawn from the split."""
        found = self._hosts.get((target.namespace, target.service))
        if found is None:
            return None
        state, tag = found
        name = state.split.tags.get(tag) if tag else state.split.pick()
        if name is None:
            return state.latest  # nothing ready yet: the activator holds the request
        return state.revisions.get(name)

    def known_hosts(self) -> list[str]:
        return sorted(f"{name}.{ns}" for ns, name in self._hosts)

    # -- time ----------------------------------------------------------------------------------
    def replacing(self, runtime: RevisionRuntime) -> bool:
        """runtime is its Service's latest revision, not ready yet, and another one serves."""
        state = self.services.get((runtime.service.namespace, runtime.service.name))
        return (
            state is not None
            and state.latest is runtime
            and state.latest_ready not in (None, runtime.name)
        )

    def admit(self, runtime: RevisionRuntime) -> int:
        """The replicas runtime may run now under the replica budget (knfn/serving/budget.py); the
        revisions that must yield to an activation are told to, here."""
        runtimes = self.runtimes()
        if runtime not in runtimes:  # a pinned revision being set up, or one being dropped
            runtimes.append(runtime)
        caps = self.ctx.caps
        self.memory = self.ctx.memory(caps.reserve)
        demands = [rt.demand() for rt in runtimes]
        decided = budget.plan(demands, self.memory, caps.per_revision, caps.total)
        for rt in runtimes:
            rt.capped_by = decided.held.get(rt.key)
            rt.capped_at = decided.allowed[rt.key] if rt.capped_by else None
            for _ in range(decided.yields.get(rt.key, 0)):
                self.ctx.printer.line("knfn", f"{rt.name} yields a replica to {runtime.name}")
                rt.yield_replica()
        wanted = {d.name: d.wanted for d in demands}
        line = self._binding.update(self.ctx.clock(), decided.held, self._why(decided, wanted))
        if line is not None:
            self.ctx.printer.line("knfn", line)
        return decided.allowed[runtime.key]

    def _why(self, decided: budget.Plan, wanted: dict[str, int]) -> str:
        """What binds, in words: each held revision and the limit that holds it."""
        held = ", ".join(
            f"{key.split('/', 1)[1]} at {decided.allowed[key]} of {wanted[key]} ({reason})"
            for key, reason in sorted(decided.held.items())
        )
        return f"{held}; {self.limits()}"

    def limits(self) -> str:
        caps, memory = self.ctx.caps, self.memory
        parts = []
        if memory is not None:
            parts.append(
                f"memory: {memory.available / budget.MiB:.0f} MiB available, "
                f"{memory.reserve / budget.MiB:.0f} MiB reserve ({caps.reserve})"
            )
        if caps.total is not None:
            parts.append(f"max-replicas {caps.total}")
        if caps.per_revision is not None:
            parts.append(f"max-replicas-per-revision {caps.per_revision}")
        return ", ".join(parts) or "no limits"

    def runtimes(self) -> list[RevisionRuntime]:
        return [rt for s in self.services.values() for rt in s.revisions.values()]

    async def run(self, tick: float, stop: asyncio.Event) -> None:
        """Every second feed the autoscalers; every tick let them decide; every few seconds
        measure what a replica of each revision costs."""
        next_decision = self.ctx.clock() + tick
        next_measure = self.ctx.clock()
        while not stop.is_set():
            await self._second(stop)
            now = self.ctx.clock()
            if now >= next_measure:
                next_measure = now + MEASURE_INTERVAL
                await self._measure()
            for rt in self.runtimes():
                rt.record(now)
                rt.forget_stopped()
            for rt in list(self._draining):
                rt.forget_stopped()
                if not rt.slots:
                    self._draining.discard(rt)
            if now >= next_decision:
                next_decision = now + tick
                for state in self.services.values():
                    for rt in list(state.revisions.values()):
                        rt.decide(now)
                    self._route(state)
            self._export()

    async def _second(self, stop: asyncio.Event) -> None:
        """A second of the context's sleep, cut short by stop."""
        waits = [asyncio.ensure_future(self.ctx.sleep(1.0)), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _measure(self) -> None:
        """PSS of the ready replicas, read off the loop (a /proc walk per replica)."""
        pids = {
            rt.key: [s.replica.pid for s in rt.slots
                     if s.endpoint is not None and not s.stopping and s.replica.pid]
            for rt in self.runtimes()
        }  # fmt: skip
        await self.ctx.offload(lambda: self.costs.measure(pids))
        self.costs.forget(pids)

    def _export(self) -> None:
        for rt in self.runtimes():
            metrics.REPLICAS.labels(*rt.labels, "desired").set(rt.desired)
            metrics.REPLICAS.labels(*rt.labels, "ready").set(rt.ready)

    async def stop(self, grace: float | None = None) -> None:
        """Stop every replica; grace=0 (a forced stop) kills them at once."""
        runtimes = [*self.runtimes(), *self._draining]
        await asyncio.gather(*(rt.stop(grace) for rt in runtimes), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        services = []
        for state in self.services.values():
            svc = state.service
            revisions = [
                rt.status(
                    state.split.percent_of(name),
                    next((t for t, r in state.split.tags.items() if r == name), None),
                )
                for name, rt in state.revisions.items()
            ]
            services.append(
                {
                    "name": svc.name,
                    "namespace": svc.namespace,
                    "url": state.url,
                    "local_url": f"http://{svc.name}.{svc.namespace}.localhost",
                    "latest_created_revision": state.latest.name,
                    "latest_ready_revision": state.latest_ready,
                    "revisions": revisions,
                }
            )
        running = sum(rt.active for rt in self.runtimes())
        caps, memory = self.ctx.caps, self.memory
        capped = [rt for rt in self.runtimes() if rt.capped_at is not None]
        return {
            "services": services,
            "replicas": {
                "running": running,
                "cap_total": caps.total,
                "cap_per_revision": caps.per_revision,
                "capped": [rt.name for rt in capped],
                # Why each capped revision is held (knfn/serving/budget.py), and the limits.
                "capped_by": {rt.name: rt.capped_by for rt in capped},
                "limits": self.limits(),
                "memory_available_mib": None if memory is None else memory.available // budget.MiB,
                "memory_reserve_mib": None if memory is None else memory.reserve // budget.MiB,
                "replica_pss_mib": {
                    key.split("/", 1)[1]: round(size / budget.MiB, 1)
                    for key, size in self.costs.measured().items()
                },
            },
        }
