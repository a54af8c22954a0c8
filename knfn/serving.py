"""Knative Serving on one machine: revisions, their replicas and scale, and the routes to them.

Per Service: the revision of its current code and template (a new one when either changes), the
revisions that spec.traffic names, and the resolved split. Per revision: a throttler (queue-proxy
and activator rules), an autoscaler deciding its scale, and replica processes. Revisions that no
route reaches any more are drained and stopped, as Knative scales unreachable revisions to zero.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from knfn import manifests as mf
from knfn import metrics, traffic
from knfn.kpa import Autoscaler
from knfn.logs import Printer
from knfn.ports import free_port
from knfn.replica_env import SecretValues, resolve
from knfn.revisions import Revision
from knfn.routing import Target
from knfn.supervisor import ReplicaError, ReplicaSpec
from knfn.template import Template, start_mode
from knfn.throttler import Endpoint, Throttler

READY_TIMEOUT = 60.0
CRASH_BACKOFF_MAX = 30.0
# A replica that lived this long resets the crash backoff.
HEALTHY_AFTER = 10.0


@dataclass(frozen=True)
class Caps:
    """Local limits on replicas, sized to the machine; reported in /status when they bind."""

    per_revision: int
    total: int

    @classmethod
    def for_machine(cls, env: Mapping[str, str]) -> Caps:
        default = max(4, 4 * (os.cpu_count() or 1))
        total = int(env.get("KNFN_MAX_REPLICAS", default))
        return cls(int(env.get("KNFN_MAX_REPLICAS_PER_REVISION", total)), total)


class ReplicaHandle(Protocol):
    """What serving uses of a replica: knfn.supervisor.Replica, or a fake in unit tests."""

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
    """Where revisions are recorded: knfn.revisions.RevisionStore (Postgres)."""

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
    templates: bool = False  # fork replicas from a template per revision (knfn/template.py)


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

    def reconcile(self) -> None:
        """Start or retire replicas until the active count is the desired one, within caps."""
        want = self.desired if self.routable else 0
        allowed = min(want, self.ctx.caps.per_revision)
        allowed = min(allowed, self.active + self.serving.headroom())
        self.capped_at = allowed if allowed < want else None
        now = self.ctx.clock()
        while self.active < allowed and now >= self._not_before:
            self._spawn()
        while self.active > max(allowed, 0):
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

    # -- the template replicas are forked from (knfn/template.py) ------------------------------
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
        for key, svc in wanted.items():
            revision = await loop.run_in_executor(
                None, self.ctx.store.ensure, svc.namespace, svc.name,
                self.ctx.functions_dir / svc.name, svc.template,
            )  # fmt: skip
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
    def headroom(self) -> int:
        """Replicas that may still start before the machine-wide cap."""
        running = sum(rt.active for s in self.services.values() for rt in s.revisions.values())
        return max(0, self.ctx.caps.total - running)

    def runtimes(self) -> list[RevisionRuntime]:
        return [rt for s in self.services.values() for rt in s.revisions.values()]

    async def run(self, tick: float, stop: asyncio.Event) -> None:
        """Every second feed the autoscalers; every tick let them decide."""
        next_decision = self.ctx.clock() + tick
        while not stop.is_set():
            await self._second(stop)
            now = self.ctx.clock()
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
        caps = self.ctx.caps
        return {
            "services": services,
            "replicas": {"running": running, "cap_total": caps.total,
                         "cap_per_revision": caps.per_revision,
                         "capped": [rt.name for rt in self.runtimes() if rt.capped_at is not None]},
        }  # fmt: skip
