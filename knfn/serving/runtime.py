"""Knative Serving on one machine: every Service of the manifests, kept running.

Per Service (route.py): the revision of its current code and template (a new one when either
changes), the revisions that spec.traffic names, and the resolved split. Per revision
(revision_runtime.py): a throttler (queue-proxy and activator rules), an autoscaler deciding its
scale, and replica processes, as many as the replica budget admits (admission.py). Revisions
that no route reaches any more are drained and stopped, as Knative scales unreachable revisions
to zero. What Serving needs from outside comes in its Context (context.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from knfn import manifests as mf
from knfn import metrics
from knfn.routing import Target
from knfn.serving.admission import MEASURE_INTERVAL, Admission
from knfn.serving.context import Context
from knfn.serving.revision import Revision, digest
from knfn.serving.revision_runtime import RevisionRuntime
from knfn.serving.route import Hosts, ServiceState


class Serving:
    """Every Service of the manifests, kept running as Knative would run it."""

    def __init__(self, ctx: Context, manifests: mf.Manifests) -> None:
        self.ctx = ctx
        self.manifests = manifests
        self.services: dict[tuple[str, str], ServiceState] = {}
        self.hosts = Hosts()
        # Revisions no route reaches any more whose replicas still drain: stop reaches them.
        self._draining: set[RevisionRuntime] = set()
        self.admission = Admission(ctx)

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
        self._draining.update(state.reroute())

    def _index_hosts(self) -> None:
        self.hosts = Hosts(self.services)

    # -- the gateway's questions -------------------------------------------------------------
    def route(self, target: Target) -> RevisionRuntime | None:
        """The revision a request for target goes to: by tag, else drawn from the split."""
        return self.hosts.route(target)

    def known_hosts(self) -> list[str]:
        return self.hosts.known()

    # -- what revisions ask, and time -----------------------------------------------------------
    def replacing(self, runtime: RevisionRuntime) -> bool:
        """runtime is its Service's latest revision, not ready yet, and another one serves."""
        state = self.services.get((runtime.service.namespace, runtime.service.name))
        return (
            state is not None
            and state.latest is runtime
            and state.latest_ready not in (None, runtime.name)
        )

    def admit(self, runtime: RevisionRuntime) -> int:
        """The replicas runtime may run now under the replica budget (admission.py)."""
        return self.admission.admit(runtime, self.runtimes())

    def runtimes(self) -> list[RevisionRuntime]:
        return [rt for s in self.services.values() for rt in s.revisions.values()]

    def autoscaling(self) -> list[metrics.RevisionAutoscaling]:
        """Every routed revision for Knative's autoscaler metrics (knfn/metrics.py)."""
        return [rt.autoscaling() for rt in self.runtimes()]

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
                await self.admission.measure(self.runtimes())
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
        return {
            "services": [state.status() for state in self.services.values()],
            "replicas": self.admission.status(self.runtimes()),
        }
