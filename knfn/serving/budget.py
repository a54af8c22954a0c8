"""The replica budget: how many replicas each revision may run, from the machine's memory.

Knative leaves this to the cluster's scheduler: a pod that does not fit stays Pending. On one
machine knfn decides itself, and a count of replicas is the wrong unit: a replica forked from its
revision's template shares most of its pages and costs a few MiB, a spawned one tens of MiB.
So replicas are admitted while memory allows: the cost of a replica is its measured PSS
(``/proc/PID/smaps_rollup``, the replica's process and its workers), and a reserve of
``MemAvailable`` (``/proc/meminfo``) is kept for everything else. Counts are still there as
explicit options (``--max-replicas``, ``--max-replicas-per-revision``), off by default.

A template's spare (template.py: a started server that is not a replica yet) is measured the
same way and shown apart; once running its pages are in ``MemAvailable`` like any process's,
and while one is being started it is charged as a starting replica is.

The rules (:func:`plan`, a pure function):

1. What runs stays: the budget admits new replicas, it never sheds running ones because memory
   got short (the autoscaler scales them down when load goes).
2. Activation is never blocked: a revision with a request waiting and no replica, or a new
   revision replacing one that serves, gets its first replica. When the budget is spent, the
   revision with the largest surplus over its fair share (max-min fair over what each wants)
   yields one, which drains gracefully; if none can, the first replica starts anyway, over
   budget, for as long as the others drain.
3. Growth is shared: free room goes one replica at a time to the revision that has fewest, so
   one busy Service cannot take it all while another waits.

The shell below the core reads ``/proc``; on a system without it the memory bound is off and
only the explicit counts apply.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from knfn.errors import KnfnError

MiB = 1024 * 1024
# The cost of a replica of a revision none of whose replicas has been measured yet: about what a
# spawned functions-framework replica takes (a forked one takes far less, and is soon measured).
REPLICA_ESTIMATE = 32 * MiB
DEFAULT_RESERVE = "10%"

MEMORY = "memory"
TOTAL = "max-replicas"
PER_REVISION = "max-replicas-per-revision"


class BudgetError(KnfnError, ValueError):
    """A budget setting that cannot be read."""


# ---- settings, parsed once at the CLI edge ---------------------------------------------------

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>%|[KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}  # fmt: skip


@dataclass(frozen=True)
class Reserve:
    """Memory kept free: a number of bytes, or a percentage of the machine's memory."""

    amount: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> Reserve:
        """``"10%"``, ``"2Gi"``, ``"512Mi"``, ``"1G"``, ``"1073741824"`` (Kubernetes units)."""
        found = _SIZE.fullmatch(text.strip())
        if found is None:
            raise BudgetError(
                f"{text!r} is not a size: write a percentage of memory (10%) or bytes with "
                "a Kubernetes unit (512Mi, 2Gi, 1G)"
            )
        number, unit = float(found["number"]), (found["unit"] or "").upper().removesuffix("B")
        if unit == "%":
            if number > 90:
                raise BudgetError(f"{text!r}: a reserve above 90% of memory leaves no room")
            return cls(number, percent=True)
        return cls(number * _UNITS[unit])

    def bytes_of(self, total: int) -> int:
        return int(total * self.amount / 100) if self.percent else int(self.amount)

    def __str__(self) -> str:
        return f"{self.amount:g}%" if self.percent else f"{self.amount / MiB:.0f} MiB"


@dataclass(frozen=True)
class Caps:
    """Local limits on replicas: the memory reserve, and optional counts (None: no count)."""

    per_revision: int | None = None
    total: int | None = None
    reserve: Reserve = field(default_factory=lambda: Reserve.parse(DEFAULT_RESERVE))
    replica_estimate: int = REPLICA_ESTIMATE


# ---- the core --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    """One revision as the budget sees it."""

    name: str
    wanted: int  # what its autoscaler asks (0 when no route reaches it)
    active: int  # replicas running or starting (not those draining)
    ready: int
    in_flight: int = 0  # requests it holds, served or waiting
    activating: bool = False  # a request waits for its first replica, or it replaces a revision
    cost: int = REPLICA_ESTIMATE  # bytes one more replica of it takes
    spares_starting: int = 0  # its template's spare being started (template.py), 0 or 1


@dataclass(frozen=True)
class Memory:
    """What the machine has: MemAvailable and the reserve kept from it, in bytes."""

    available: int
    reserve: int


@dataclass(frozen=True)
class Plan:
    """What each revision may run, who yields for an activation, and who is held and why."""

    allowed: Mapping[str, int]
    yields: Mapping[str, int]  # revision -> replicas it retires so that an activation starts
    held: Mapping[str, str]  # revision below what it wants -> MEMORY, TOTAL or PER_REVISION


def fair_shares(capacity: float, wants: Mapping[str, int]) -> dict[str, float]:
    """Max-min fair division of capacity: nobody gets more than it wants, the rest evenly."""
    shares: dict[str, float] = {}
    left, pending = float(capacity), sorted(wants.items(), key=lambda kv: kv[1])
    while pending:
        even = left / len(pending)
        name, want = pending[0]
        if want > even:
            shares.update((n, even) for n, _ in pending)
            break
        shares[name] = float(want)
        left -= want
        pending.pop(0)
    return shares


def plan(
    demands: Sequence[Demand],
    memory: Memory | None,
    per_revision: int | None = None,
    total: int | None = None,
) -> Plan:
    """How many replicas each revision may have now (module docstring: the three rules).

    ``memory`` None means the memory bound is off (no /proc). Replicas starting (active, not
    ready) and spares starting are charged their cost against ``memory.available``: their pages
    are not in it yet.
    """
    by_name = {d.name: d for d in demands}
    want = {d.name: min(d.wanted, per_revision or d.wanted) for d in demands}
    allowed = {d.name: min(d.active, want[d.name]) for d in demands}
    free = float("inf")
    if memory is not None:
        starting = sum((max(0, d.active - d.ready) + d.spares_starting) * d.cost for d in demands)
        free = memory.available - memory.reserve - starting
    slots = float("inf") if total is None else total - sum(allowed.values())
    yields: dict[str, int] = {}

    # 2. Activation first: the first replica of a revision that a request waits for.
    for d in sorted(demands, key=lambda d: d.name):
        if not (d.activating and allowed[d.name] == 0 and want[d.name] >= 1):
            continue
        if free < d.cost or slots < 1:
            victim = _victim(demands, allowed, want)
            if victim is not None:
                allowed[victim] -= 1
                yields[victim] = yields.get(victim, 0) + 1
                free += by_name[victim].cost
                slots += 1
        allowed[d.name] = 1
        free -= d.cost
        slots -= 1

    # 3. Growth, one replica at a time to whoever has fewest, while it fits.
    while True:
        fits = [
            d for d in demands
            if allowed[d.name] < want[d.name] and d.name not in yields
            and d.cost <= free and slots >= 1
        ]  # fmt: skip
        if not fits:
            break
        d = min(fits, key=lambda d: (allowed[d.name], d.name))
        allowed[d.name] += 1
        free -= d.cost
        slots -= 1

    held: dict[str, str] = {}
    for d in demands:
        if allowed[d.name] >= d.wanted:
            continue
        if allowed[d.name] >= want[d.name]:
            held[d.name] = PER_REVISION
        elif slots < 1:
            held[d.name] = TOTAL
        else:
            held[d.name] = MEMORY
    return Plan(allowed, yields, held)


def _victim(
    demands: Sequence[Demand], allowed: Mapping[str, int], want: Mapping[str, int]
) -> str | None:
    """The revision that yields a replica to an activation: the largest surplus over its fair
    share among those that keep one serving; else an idle one at one replica; else none."""
    capacity = sum(allowed.values()) + 1  # with the replica being activated
    wants = {d.name: max(want[d.name], 1 if d.activating else 0) for d in demands}
    shares = fair_shares(capacity, wants)

    def surplus(d: Demand) -> tuple[float, int, str]:
        return (allowed[d.name] - shares[d.name], allowed[d.name], d.name)

    spare = [d for d in demands if allowed[d.name] >= 2]
    idle = [d for d in demands if allowed[d.name] == 1 and d.in_flight == 0 and not d.activating]
    for candidates in (spare, idle):
        if candidates:
            return max(candidates, key=surplus).name
    return None


# ---- saying so, once ---------------------------------------------------------------------


class BindingLog:
    """One log line when the budget starts to bind (or binds for another reason), one when it
    has not bound for ``quiet`` seconds: not one per decision."""

    def __init__(self, quiet: float = 10.0) -> None:
        self.quiet = quiet
        self._reasons: frozenset[str] = frozenset()
        self._last_bound = 0.0

    def update(self, now: float, held: Mapping[str, str], describe: str) -> str | None:
        """The line to log for this plan's ``held``, if any; describe says what binds."""
        reasons = frozenset(held.values())
        if reasons:
            self._last_bound = now
            if reasons <= self._reasons:
                return None
            self._reasons |= reasons
            return f"replica budget binds: {describe}"
        if self._reasons and now - self._last_bound >= self.quiet:
            self._reasons = frozenset()
            return "replica budget no longer binds"
        return None


# ---- the shell: /proc ----------------------------------------------------------------------

PROC = Path("/proc")


def meminfo(proc: Path = PROC) -> dict[str, int] | None:
    """/proc/meminfo in bytes (``MemTotal``, ``MemAvailable``, ...); None without /proc."""
    try:
        text = (proc / "meminfo").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def available_memory(reserve: Reserve, proc: Path = PROC) -> Memory | None:
    """MemAvailable now and the reserve in bytes; None when /proc/meminfo cannot be read."""
    info = meminfo(proc)
    if info is None or "MemAvailable" not in info:
        return None
    return Memory(info["MemAvailable"], reserve.bytes_of(info.get("MemTotal", 0)))


def pss(pid: int, proc: Path = PROC) -> int:
    """Proportional set size of one process in bytes; 0 once it is gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def children(pid: int, proc: Path = PROC) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for task in (proc / str(pid) / "task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def replica_pss(pid: int, proc: Path = PROC) -> int:
    """PSS of a replica: its process and its descendants (gunicorn's arbiter and worker)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += pss(current, proc)
        todo += children(current, proc)
    return total


class Costs:
    """The measured cost of one replica per revision: the mean PSS of its ready replicas; and
    that of its template's spare, shown apart."""

    def __init__(self, estimate: int = REPLICA_ESTIMATE) -> None:
        self.estimate = estimate
        self._by_revision: dict[str, int] = {}
        self._spares: dict[str, int] = {}

    def measure(self, replicas: Mapping[str, Iterable[int]], proc: Path = PROC) -> None:
        """Revision name -> pids of its ready replicas; revisions without any keep their last."""
        for name, pids in replicas.items():
            sizes = [s for s in (replica_pss(pid, proc) for pid in pids) if s > 0]
            if sizes:
                self._by_revision[name] = sum(sizes) // len(sizes)

    def measure_spares(self, spares: Mapping[str, int | None], proc: Path = PROC) -> None:
        """Revision name -> pid of its template's spare (None: none now, its last is kept)."""
        for name, pid in spares.items():
            size = replica_pss(pid, proc) if pid else 0
            if size > 0:
                self._spares[name] = size

    def forget(self, keep: Iterable[str]) -> None:
        wanted = set(keep)
        self._by_revision = {k: v for k, v in self._by_revision.items() if k in wanted}
        self._spares = {k: v for k, v in self._spares.items() if k in wanted}

    def of(self, name: str) -> int:
        return self._by_revision.get(name, self.estimate)

    def measured(self) -> dict[str, int]:
        return dict(self._by_revision)

    def spares(self) -> dict[str, int]:
        """The PSS of each revision's spare, as last measured."""
        return dict(self._spares)
