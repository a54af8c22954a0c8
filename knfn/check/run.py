"""`knfn check`: read the manifests as `knfn dev` does, measure every function at once, judge.

Functions are measured in parallel, each in a work folder of its own on its own ports; a start
time leaves out the time spent waiting for a CPU, so it says how fast the function is, not how
busy the machine was.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from knfn import manifests
from knfn.check.config import secret_data
from knfn.check.measure import Limits, Measurement, Run
from knfn.check.model import CheckError, Verdict
from knfn.check.source import FunctionSource, Subject
from knfn.check.verdicts import judge
from knfn.settings import Settings


class UnknownServices(CheckError):
    """SERVICE names that no Service in the manifests has."""

    exit_code = 2

    def __init__(self, unknown: Sequence[str], known: Sequence[str]) -> None:
        super().__init__(
            f"no Service named {', '.join(unknown)} in the manifests; known: {', '.join(known)}"
        )
        self.unknown, self.known = tuple(unknown), tuple(known)


@dataclass(frozen=True)
class CheckOptions:
    host_env: Mapping[str, str]
    limits: Limits = field(default_factory=Limits)
    # Functions starting at once. Time spent queued for a CPU is left out of a start time
    # (measure.queued), so a busy machine does not make a function slow: start them together.
    parallel: int = max(8, 2 * (os.cpu_count() or 1))
    argv: tuple[str, ...] = (str(Path(sys.executable).parent / "functions-framework"),)


def subjects(settings: Settings, names: Sequence[str]) -> tuple[manifests.Manifests, list[Subject]]:
    """The Services to check (all when names is empty), with their code and manifests."""
    m = manifests.load(settings.knative_dir, settings.functions_dir)
    known = [s.name for s in m.services]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownServices(unknown, known)
    secrets = {
        (o.namespace, o.name): (o.file, secret_data(o.document)) for o in m.of_kind("Secret")
    }
    jobs = tuple(o.name for o in m.of_kind("Job"))
    chosen = [s for s in m.services if not names or s.name in names]
    return m, [
        Subject(s, FunctionSource.read(settings.functions_dir / s.name), secrets, jobs)
        for s in chosen
    ]


async def _measure_all(
    m: manifests.Manifests, chosen: Sequence[Subject], options: CheckOptions, work: Path
) -> list[Measurement]:
    starting = asyncio.Semaphore(options.parallel)

    async def one(i: int, subject: Subject) -> Measurement:
        run = Run(
            subject, m, work / f"{i}-{subject.name}", options.host_env, options.argv, options.limits
        )
        try:
            return await run.measure(starting)
        except Exception as exc:  # reported as the reason it could not be measured
            return Measurement(
                0, options.limits.stop, start_problem=f"the measured run failed: {exc!r}"
            )

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(chosen))))


def check(settings: Settings, names: Sequence[str], options: CheckOptions) -> list[Verdict]:
    """Twelve verdicts per chosen Service, in the manifests' order."""
    m, chosen = subjects(settings, names)
    with tempfile.TemporaryDirectory(prefix="knfn-check-") as work:
        measured = asyncio.run(_measure_all(m, chosen, options, Path(work)))
    return [
        v
        for s, ms in zip(chosen, measured, strict=True)
        for v in judge(s, ms, options.limits.ready)
    ]
