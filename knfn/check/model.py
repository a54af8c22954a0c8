"""What `knfn check` says: one verdict per factor per function, and the function it looks at.

A verdict is ``pass``, ``warn`` or ``fail`` with one line of evidence and one line of fix. A
check that cannot decide says ``warn`` and why; nothing passes for lack of looking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from knfn.errors import KnfnError

Status = Literal["pass", "warn", "fail"]

FACTORS: dict[int, str] = {
    1: "codebase",
    2: "dependencies",
    3: "config",
    4: "backing services",
    5: "build, release, run",
    6: "processes",
    7: "port binding",
    8: "concurrency",
    9: "disposability",
    10: "dev/prod parity",
    11: "logs",
    12: "admin processes",
}


class CheckError(KnfnError):
    """`knfn check` could not look at a function at all (not a verdict on it)."""


@dataclass(frozen=True)
class Finding:
    """One thing a check found: how bad, what, and what to do about it."""

    status: Status
    evidence: str
    fix: str = ""


@dataclass(frozen=True)
class Verdict:
    service: str
    factor: int
    name: str
    status: Status
    evidence: str
    fix: str

    def as_json(self) -> dict[str, object]:
        return asdict(self)


RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}


def verdict(service: str, factor: int, findings: Iterable[Finding], passed: str) -> Verdict:
    """The worst of findings (the first of equals), or a pass with ``passed`` as evidence.

    Only problems are findings: no finding at all is what a pass means, and ``passed`` says what
    was looked at, so a pass is never silent."""
    problems = [f for f in findings if f.status != "pass"]
    if not problems:
        return Verdict(service, factor, FACTORS[factor], "pass", passed, "")
    worst = max(problems, key=lambda f: RANK[f.status])  # the first of the worst
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return Verdict(service, factor, FACTORS[factor], worst.status, worst.evidence + more, worst.fix)


def failed(verdicts: Iterable[Verdict]) -> bool:
    return any(v.status == "fail" for v in verdicts)
