"""The replica budget at work: which running revision may have how many replicas now.

The rules are budget.py's pure :func:`~knfn.serving.budget.plan`; this is its shell. On every
reconcile it reads the machine's memory, asks each revision what it wants, tells the revisions
that must yield a replica to an activation, says once in the log when a limit starts or stops
binding, and measures every few seconds what a replica of each revision costs (its PSS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from knfn.serving import budget
from knfn.serving.context import Context
from knfn.serving.revision_runtime import RevisionRuntime

# How often the memory a replica of each revision takes is measured (budget.py).
MEASURE_INTERVAL = 5.0


class Admission:
    """The replica budget over every running revision, with what it last measured."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.costs = budget.Costs(ctx.caps.replica_estimate)
        self.memory: budget.Memory | None = None
        self._binding = budget.BindingLog()

    def admit(self, runtime: RevisionRuntime, runtimes: list[RevisionRuntime]) -> int:
        """The replicas runtime may run now among runtimes (runtime may be one of them); the
        revisions that must yield to an activation are told to, here."""
        if runtime not in runtimes:  # a pinned revision being set up, or one being dropped
            runtimes.append(runtime)
        caps = self.ctx.caps
        self.memory = self.ctx.memory(caps.reserve)
        demands = [rt.demand(self.costs.of(rt.key)) for rt in runtimes]
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

    async def measure(self, runtimes: Sequence[RevisionRuntime]) -> None:
        """PSS of the ready replicas, read off the loop (a /proc walk per replica)."""
        pids = {
            rt.key: [s.replica.pid for s in rt.slots
                     if s.endpoint is not None and not s.stopping and s.replica.pid]
            for rt in runtimes
        }  # fmt: skip
        # And each template's spare: a started server, not a replica yet (template.py).
        spares = {rt.key: rt.template.spare_pid for rt in runtimes if rt.template is not None}

        def read() -> None:
            self.costs.measure(pids)
            self.costs.measure_spares(spares)

        await self.ctx.offload(read)
        self.costs.forget(pids)

    def status(self, runtimes: Sequence[RevisionRuntime]) -> dict[str, Any]:
        """The replicas running, the limits and what binds, for /status and ``knfn status``."""
        running = sum(rt.active for rt in runtimes)
        caps, memory = self.ctx.caps, self.memory
        capped = [rt for rt in runtimes if rt.capped_at is not None]
        return {
            "running": running,
            "cap_total": caps.total,
            "cap_per_revision": caps.per_revision,
            "capped": [rt.name for rt in capped],
            # Why each capped revision is held (budget.py), and the limits.
            "capped_by": {rt.name: rt.capped_by for rt in capped},
            "limits": self.limits(),
            "memory_available_mib": None if memory is None else memory.available // budget.MiB,
            "memory_reserve_mib": None if memory is None else memory.reserve // budget.MiB,
            "replica_pss_mib": {
                key.split("/", 1)[1]: round(size / budget.MiB, 1)
                for key, size in self.costs.measured().items()
            },
            # A template's spare: a started server, not a replica yet (template.py).
            "spare_pss_mib": {
                key.split("/", 1)[1]: round(size / budget.MiB, 1)
                for key, size in self.costs.spares().items()
            },
        }
