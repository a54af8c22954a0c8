"""Which Service a request is for, from its Host (or absolute-form request line).

Accepted, as Knative names them: ``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``,
``<svc>.<ns>.localhost`` (curl and browsers resolve ``*.localhost`` to loopback) and
``<svc>.<ns>``; a port suffix is ignored. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAINS = ("svc.cluster.local", "svc", "localhost")
# Where Knative's multi-tenant broker ingress answers: <BROKER_INGRESS>/<namespace>/<broker>.
BROKER_INGRESS = "http://broker-ingress.knative-eventing.svc.cluster.local"


@dataclass(frozen=True)
class Target:
    namespace: str
    service: str


BROKER_INGRESS_TARGET = Target("knative-eventing", "broker-ingress")


def parse_host(host: str) -> Target | None:
    """The (namespace, service) a Host header names, or None when it names none."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip().rstrip(".").lower()
    for domain in DOMAINS:
        if name.endswith("." + domain):
            name = name[: -len(domain) - 1]
            break
    labels = name.split(".")
    if len(labels) != 2 or not all(labels):
        return None
    return Target(namespace=labels[1], service=labels[0])
