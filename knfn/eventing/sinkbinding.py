"""SinkBindings: the K_SINK (and K_CE_OVERRIDES) a Service's replicas get, read once per load.

In a cluster the SinkBinding webhook writes ``K_SINK``, the resolved address of ``spec.sink``,
and ``K_CE_OVERRIDES``, ``spec.ceOverrides`` as JSON, into the subject's pods
(knative/eventing pkg/apis/sources/v1/sinkbinding_lifecycle.go Do). Locally the same two
variables are added to the environment of every replica of the subject Service
(serving/replica_env.py).

Each binding is checked when the manifests are read, as Triggers are: ``spec.subject`` must name
a Knative Service of the manifests and ``spec.sink`` must resolve (destinations.py); anything
else stops start-up naming the file, the object and the field. Knative would accept a binding
whose subject or sink is missing and leave it not ready; locally it is nearly always a typo.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from knfn.eventing import destinations
from knfn.eventing.errors import DeliveryError

if TYPE_CHECKING:
    from knfn.manifests import Manifest, Manifests


def load(m: Manifests) -> dict[tuple[str, str], dict[str, str]]:
    """K_SINK (and K_CE_OVERRIDES) per (namespace, Service) from every SinkBinding."""
    return dict(binding(m, obj) for obj in m.of_kind("SinkBinding"))


def binding(m: Manifests, obj: Manifest) -> tuple[tuple[str, str], dict[str, str]]:
    """The subject of one SinkBinding and the variables it gets; ManifestError otherwise."""
    spec = obj.spec
    subject = spec.get("subject")
    if not isinstance(subject, Mapping) or subject.get("kind") != "Service":
        raise obj.error("spec.subject", "must name a Knative Service (kind: Service and a name)")
    name = subject.get("name")
    if not isinstance(name, str) or not name:
        raise obj.error("spec.subject.name", "is required (a selector is not supported locally)")
    namespace = str(subject.get("namespace") or obj.namespace)
    if m.service(namespace, name) is None:
        raise obj.error("spec.subject", f"no Service {namespace}/{name} in the manifests")
    if spec.get("sink") is None:
        raise obj.error("spec.sink", "is required")
    try:
        sink = destinations.parse_destination(spec["sink"], "spec.sink")
        env = {"K_SINK": destinations.resolve(m, sink, obj.namespace)}
    except DeliveryError as exc:
        raise exc.at(obj) from None
    overrides = spec.get("ceOverrides")
    if overrides:
        env["K_CE_OVERRIDES"] = json.dumps(overrides, separators=(",", ":"))
    return (namespace, name), env
