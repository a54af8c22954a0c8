"""A Service's route: its revisions, the traffic split over them, and the hosts that reach them.

A Knative Service owns a Configuration (its revisions, the latest created and the latest ready
one) and a Route (``spec.traffic`` resolved to percentages and tags, traffic.py).
:class:`ServiceState` holds both for one Service; :class:`Hosts` maps each host a request may
name (``SERVICE``, or ``TAG-SERVICE`` for a tag, per namespace) to its Service and tag, and picks
the revision a request goes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from knfn import manifests as mf
from knfn.routing import Target
from knfn.serving import traffic
from knfn.serving.revision_runtime import RevisionRuntime


@dataclass
class ServiceState:
    """One Service as it runs: its revisions, the latest created and ready, and its split."""

    service: mf.Service
    latest: RevisionRuntime
    latest_ready: str | None = None
    revisions: dict[str, RevisionRuntime] = field(default_factory=dict)
    split: traffic.Split = field(default_factory=lambda: traffic.resolve([], None))

    @property
    def url(self) -> str:
        return f"http://{self.service.name}.{self.service.namespace}.svc.cluster.local"

    def reroute(self) -> list[RevisionRuntime]:
        """Resolve the split again and mark what no route reaches; those of them with nothing
        left running or in flight are dropped, and returned for the caller to see drained."""
        self.split = traffic.resolve(self.service.traffic, self.latest_ready)
        # Every revision spec.traffic names stays active, at 0% and untagged too, so its
        # min-scale holds; the others go to "reserve" and scale to zero (traffic.py).
        reachable = traffic.referenced(self.service.traffic, self.latest_ready)
        # The latest revision stays: while it comes up it has no traffic yet, and once ready
        # its autoscaler takes it to zero if nothing reaches it (the labeler too keeps the
        # latest created revision of a latestRevision target active).
        reachable.add(self.latest.name)
        dropped = []
        for name, rt in list(self.revisions.items()):
            rt.routable = name in reachable
            if not rt.routable:
                rt.reconcile()
                if not rt.active and not rt.throttler.meter.value:
                    del self.revisions[name]
                    rt.drop_template()
                    dropped.append(rt)
        return dropped

    def status(self) -> dict[str, Any]:
        svc, split = self.service, self.split
        revisions = [
            {
                **rt.status(
                    split.percent_of(name),
                    next((t for t, r in split.tags.items() if r == name), None),
                ),
                # The serving.knative.dev/routingState label Knative would give it.
                "routing_state": "active" if rt.routable else "reserve",
            }
            for name, rt in self.revisions.items()
        ]
        return {
            "name": svc.name,
            "namespace": svc.namespace,
            "url": self.url,
            "local_url": f"http://{svc.name}.{svc.namespace}.localhost",
            "latest_created_revision": self.latest.name,
            "latest_ready_revision": self.latest_ready,
            "revisions": revisions,
        }


class Hosts:
    """Every host a request may name, by namespace, with its Service and tag (None: no tag)."""

    def __init__(self, services: Mapping[tuple[str, str], ServiceState] | None = None) -> None:
        hosts: dict[tuple[str, str], tuple[ServiceState, str | None]] = {}
        for (ns, name), state in (services or {}).items():
            hosts[(ns, name)] = (state, None)
            for tag in state.split.tags:
                hosts[(ns, f"{tag}-{name}")] = (state, tag)
        self._hosts = hosts

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

    def known(self) -> list[str]:
        """Every host as ``SERVICE.NAMESPACE``, sorted."""
        return sorted(f"{name}.{ns}" for ns, name in self._hosts)
