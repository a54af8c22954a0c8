"""One revision at run time: its throttler, its autoscaler, its replicas and their template.

A revision scales to what its autoscaler (kpa.py) decides and the replica budget (budget.py,
applied by admission.py) allows. Replicas are started, probed, retired to drain, and replaced
with a backoff when they crash, as the Deployment of a Knative revision would be; each ready
one is an endpoint of the revision's throttler (throttler.py), which the gateway admits
requests through. After every decision the revision's activator (activator.py) takes the mode
the KPA reconciler would give its ServerlessService: the activator in the path or not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from knfn import manifests as mf
from knfn import metrics
from knfn.serving import budget
from knfn.serving.activator import Activator
from knfn.serving.context import ReplicaHandle
from knfn.serving.kpa_status import autoscaler_status
from knfn.serving.replica import ReplicaError, ReplicaSpec
from knfn.serving.replica_env import resolve
from knfn.serving.revision import Revision
from knfn.serving.template import Template, start_mode
from knfn.serving.throttler import Endpoint, Throttler

if TYPE_CHECKING:
    from knfn.serving.runtime import Serving

READY_TIMEOUT = 60.0
CRASH_BACKOFF_MAX = 30.0
# A replica that lived this long resets the crash backoff.
HEALTHY_AFTER = 10.0


@dataclass(eq=False)
class ReplicaSlot:
    """A replica of the revision: when it started, its endpoint once ready, and if it goes."""

    replica: ReplicaHandle
    started: float
    endpoint: Endpoint | None = None
    stopping: bool = False


class RevisionRuntime:
    """One revision: its throttler, autoscaler and replica processes."""

    def __init__(self, serving: Serving, service: mf.Service, revision: Revision) -> None:
        self.serving = serving
        self.service = service
        self.revision = revision
        self.ctx = serving.ctx
        self.decider = self.ctx.new_decider(service)
        self.desired = self.decider.initial_pods()
        self.activator = Activator()
        self.activator.follow(self.desired, self.decider.last.excess_burst_capacity)
        self.throttler = Throttler(
            service.container_concurrency,
            activator=self.activator,
            on_cold=self.poke,
            clock=self.ctx.clock,
        )
        self.slots: list[ReplicaSlot] = []
        self.routable = True
        self.capped_at: int | None = None
        self.capped_by: str | None = None  # what holds it below desired (budget.py)
        self._next_index = 1
        self._backoff = 0.0
        self._not_before = 0.0
        self._cold_since: float | None = None
        self.cold_starts = 0  # replicas made ready while the revision had none ready
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
    def idle_timeout_seconds(self) -> float:
        return float(self.service.idle_timeout_seconds)

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
        self._follow()
        self.reconcile()

    def record(self, now: float) -> None:
        concurrency, requests = self.throttler.meter.take()
        self.decider.record(now, concurrency, requests)

    def decide(self, now: float) -> None:
        self.desired = self.decider.decide(now, self.ready).desired_pods if self.routable else 0
        self._follow()
        self.reconcile()

    def _follow(self) -> None:
        """The activator in the path or not, from the scale asked for and the latest EBC."""
        self.activator.follow(self.requested, self.decider.last.excess_burst_capacity)

    @property
    def key(self) -> str:
        return f"{self.service.namespace}/{self.revision.name}"

    @property
    def activating(self) -> bool:
        """No replica ready, and a request waits for one or it is to replace a serving revision."""
        return self.ready == 0 and (self._cold_since is not None or self.serving.replacing(self))

    def demand(self, cost: int) -> budget.Demand:
        """What the revision asks of the replica budget; cost: the memory a replica takes."""
        spares = int(self.template is not None and self.template.spare_starting)
        return budget.Demand(
            self.key, self.desired if self.routable else 0, self.active, self.ready,
            self.throttler.meter.value, self.activating, cost, spares,
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

    # -- the template replicas are forked from (template.py) ------------------------------------
    def _new_template(self) -> Template | None:
        """Started with the revision, kept at zero, stopped with it; None: spawn replicas."""
        if not self.ctx.templates or start_mode(self.service.annotations) == "spawn":
            return None
        name = f"{self.service.name}/{self.revision.name}/template"
        template = Template(
            name, self.ctx.argv[0], self.revision.code, self._env(0), self.ctx.printer,
            root=self.ctx.template_root,
            pick_port=self.ctx.pick_port, records=self.ctx.records,
        )  # fmt: skip
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
            self.cold_starts += 1
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

    @property
    def requested(self) -> int:
        """The scale the revision asks for: its autoscaler's, 0 once no route reaches it."""
        return self.desired if self.routable else 0

    def autoscaler_status(self) -> dict[str, Any]:
        """What the KPA decides from (kpa_status.py), as of its latest decision."""
        return autoscaler_status(
            self.decider.scaling,
            self.decider.last,
            ready_pods=self.ready,
            activator_in_path=self.throttler.activator_in_path,
            now=self.ctx.clock(),
            wall_now=self.ctx.wall_clock(),
        )

    def autoscaling(self) -> metrics.RevisionAutoscaling:
        """The revision for Knative's autoscaler metrics (knfn/metrics.py)."""
        active, ready = self.active, self.ready
        return metrics.RevisionAutoscaling(
            self.service.namespace, self.service.name, self.revision.name,
            self.autoscaler_status(), self.requested, not_ready=active - ready,
            pending=max(0, self.requested - active),
            terminating=sum(1 for s in self.slots if s.stopping),
            activator_queued=self.activator.held,
        )  # fmt: skip

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
            "autoscaler": self.autoscaler_status(),
            "cold_starts": self.cold_starts,
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
