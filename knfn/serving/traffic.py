"""Traffic: which revision serves a request, from ``spec.traffic`` (pure, no I/O).

As Knative's route: no traffic block means 100% to the latest ready revision; each target names a
``revisionName`` or ``latestRevision: true`` (an entry with neither is defaulted to the latest),
with a ``percent`` (the percents sum to 100) and an optional ``tag``, a DNS-1035 label, that gets
its own host, ``<tag>-<service>.<namespace>`` (knative/serving pkg/apis/serving/v1/route_types.go,
route_defaults.go, route_validation.go).

Every revision a target names is *active* (the ``serving.knative.dev/routingState`` label the
labeler sets, pkg/reconciler/labeler/metasync.go), whatever its percent and with or without a
tag; only an active revision's PodAutoscaler is reachable, so only its min-scale holds
(pkg/reconciler/revision/resources/pa.go, autoscaling/v1alpha1/pa_lifecycle.go ScaleBounds).
:func:`referenced` gives that set.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# k8s.io/apimachinery validation.IsDNS1035Label: a letter first, at most 63 characters.
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def dns_1035_problem(value: object) -> str | None:
    """Why value is not a DNS-1035 label (route_validation.go checks tags with it), or None."""
    if isinstance(value, str) and _DNS_1035_LABEL.match(value):
        return None
    if isinstance(value, str) and value[:1].isdigit():
        return "is not a DNS-1035 label: it must start with a letter (a-z)"
    return "is not a DNS-1035 label: a-z, 0-9 and '-', a letter first, at most 63 characters"


@dataclass(frozen=True)
class TrafficTarget:
    """One entry of spec.traffic, before the latest revision is known."""

    percent: int
    revision_name: str | None = None  # None: the latest ready revision
    tag: str | None = None


def parse(entries: Sequence[Mapping[str, Any]] | None) -> tuple[list[TrafficTarget], list[str]]:
    """spec.traffic as targets, plus every problem found (each naming its entry and field)."""
    if not entries:
        return [TrafficTarget(100)], []
    targets: list[TrafficTarget] = []
    problems: list[str] = []
    tags: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"spec.traffic[{i}]"
        name = entry.get("revisionName")
        # route_defaults.go: an entry that leaves latestRevision out follows the latest
        # revision unless it names one; route_validation.go then wants the two to agree.
        latest = entry.get("latestRevision")
        if latest is None:
            latest = not name
        if bool(name) == bool(latest):
            problems.append(f"{where}: exactly one of revisionName and latestRevision: true")
        percent = entry.get("percent", 0)
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            problems.append(f"{where}.percent: {percent!r} must be an integer 0..100")
            percent = 0
        tag = entry.get("tag") or None  # an empty tag is no tag, as upstream skips it
        if tag is not None:
            if (problem := dns_1035_problem(tag)) is not None:
                problems.append(f"{where}.tag: {tag!r} {problem}")
            elif tag in tags:
                problems.append(f"{where}.tag: {tag!r} is used twice")
            tags.add(str(tag))
        targets.append(TrafficTarget(percent, str(name) if name else None, tag))
    total = sum(t.percent for t in targets)
    if total != 100:
        problems.append(f"spec.traffic: percents sum to {total}, not 100")
    return targets, problems


@dataclass(frozen=True)
class Split:
    """Resolved traffic: revision names with weights, and tag -> revision."""

    weights: tuple[tuple[str, int], ...]
    tags: Mapping[str, str]
    cumulative: tuple[int, ...]

    def pick(self, rand: Callable[[], float] = random.random) -> str | None:
        """A revision name drawn by weight (None when nothing takes traffic)."""
        if not self.cumulative:
            return None
        index = bisect.bisect_right(self.cumulative, rand() * self.cumulative[-1])
        return self.weights[min(index, len(self.weights) - 1)][0]

    def percent_of(self, revision: str) -> int:
        return sum(p for name, p in self.weights if name == revision)


def resolve(targets: Sequence[TrafficTarget], latest_ready: str | None) -> Split:
    """Targets with the latest revision filled in; entries for no revision drop out."""
    weights: dict[str, int] = {}
    tags: dict[str, str] = {}
    for t in targets:
        name = t.revision_name or latest_ready
        if name is None:
            continue
        if t.percent:
            weights[name] = weights.get(name, 0) + t.percent
        if t.tag:
            tags[t.tag] = name
    pairs = tuple(weights.items())
    running, cumulative = 0, []
    for _, percent in pairs:
        running += percent
        cumulative.append(running)
    return Split(pairs, tags, tuple(cumulative))


def referenced(targets: Sequence[TrafficTarget], latest_ready: str | None) -> set[str]:
    """The revisions the targets name, at any percent, tagged or not: Knative's active ones."""
    return {name for t in targets if (name := t.revision_name or latest_ready) is not None}
