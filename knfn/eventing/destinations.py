"""Destinations: where a Trigger, a dead-letter sink, a SinkBinding, a PingSource, a flow step or
a reply delivers, from its ``ref`` and ``uri``. One reader and one resolver for all of them.

The rules follow knative.dev/pkg:

* ``apis/duck/v1/destination.go`` ValidateDestination (what the webhook refuses): neither a
  ``ref`` nor a ``uri``; a ``uri`` alone that is not absolute (it needs a scheme and a host);
  a ``ref`` with an absolute ``uri``. ``apis/duck/v1/knative_reference.go`` KReference.Validate:
  a ``ref`` needs ``kind``, ``name`` and ``apiVersion``; its ``namespace`` defaults to the
  owner's (SetDefaults).
* ``resolver/addressable_resolver.go`` AddressableFromDestinationV1 (what the reconciler
  resolves): a ``ref`` alone is its referent's address; a ``uri`` alone is itself; with both, the
  ``uri`` is resolved as a relative reference against the ref's address (Go's
  ``url.ResolveReference``, RFC 3986, which :func:`urllib.parse.urljoin` also implements). A
  Kubernetes Service (``v1``) answers at ``http://<name>.<namespace>.svc.cluster.local``; any
  other referent must exist and be addressable, else it is left unresolved.

Locally the addressables are what the manifests declare: a Knative Service (or the Kubernetes
Service of the same name that Knative makes for it), a Broker, a Sequence and a Parallel. A ref
to anything else, or to one that is not in the manifests, is :class:`UnresolvedDestination`
(the owner's reconciler would report it not ready; the loaders decide whether that stops
start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from knfn.eventing.errors import DeliveryError, Problem, UnresolvedDestination
from knfn.routing import BROKER_INGRESS

if TYPE_CHECKING:
    from knfn.manifests import Manifests

SERVING_GROUP = "serving.knative.dev"
EVENTING_GROUP = "eventing.knative.dev"
FLOWS_GROUP = "flows.knative.dev"


@dataclass(frozen=True)
class Destination:
    """A Knative Destination (knative.dev/pkg apis/duck/v1/destination.go): ref, uri or both,
    as read from the field ``where`` (which errors name)."""

    uri: str | None = None
    ref_kind: str | None = None
    ref_name: str | None = None
    ref_namespace: str | None = None
    ref_api_version: str | None = None
    where: str = field(default="", compare=False)

    @property
    def ref_group(self) -> str:
        """The API group of the ref (``""`` for the core group, as in ``apiVersion: v1``)."""
        return (self.ref_api_version or "").rpartition("/")[0]


def parse_destination(raw: Any, where: str) -> Destination:
    """A Destination from a manifest field; DeliveryError names the field (destination.go)."""
    if not isinstance(raw, Mapping):
        raise DeliveryError.of(where, "must be an object with a ref or a uri")
    uri, ref = raw.get("uri"), raw.get("ref")
    if uri is None and ref is None:
        raise DeliveryError.of(where, "needs a ref or a uri")
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise DeliveryError.of(f"{where}.uri", "must be a non-empty string")
    if ref is None:
        parts = urlsplit(str(uri))
        if not parts.scheme or not parts.netloc:
            raise DeliveryError.of(
                f"{where}.uri", f"{uri!r} must be an absolute URL when there is no ref"
            )
        return Destination(uri=str(uri), where=where)
    if not isinstance(ref, Mapping):
        raise DeliveryError.of(f"{where}.ref", "must be an object with kind, name and apiVersion")
    fields: dict[str, str | None] = {}
    problems: list[Problem] = []
    for key in ("kind", "name", "apiVersion", "namespace"):
        value = ref.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(Problem(f"{where}.ref.{key}", "must be a non-empty string"))
        elif value is None and key != "namespace":
            problems.append(Problem(f"{where}.ref.{key}", "is required"))
        fields[key] = value
    if uri is not None:
        parts = urlsplit(str(uri))
        if parts.scheme or parts.netloc:
            problems.append(
                Problem(f"{where}.uri", f"{uri!r} must be relative (a path) when a ref is given")
            )
    if problems:
        raise DeliveryError(problems)
    return Destination(
        uri=uri,
        ref_kind=fields["kind"],
        ref_name=fields["name"],
        ref_namespace=fields["namespace"],
        ref_api_version=fields["apiVersion"],
        where=where,
    )


def resolve(m: Manifests, dest: Destination, namespace: str) -> str:
    """The URL ``dest``, written in an object of ``namespace``, delivers to.

    UnresolvedDestination (naming ``dest.where``) when its ref names nothing addressable in the
    manifests.
    """
    if dest.ref_kind is None:
        if dest.uri is None:
            raise DeliveryError.of(dest.where, "needs a ref or a uri")
        return dest.uri
    base = _address(m, dest, dest.ref_namespace or namespace)
    # With both, the uri is relative to the ref's address (AddressableFromDestinationV1).
    return urljoin(base, dest.uri) if dest.uri else base


def _address(m: Manifests, dest: Destination, ns: str) -> str:
    kind, name, group = dest.ref_kind, dest.ref_name or "", dest.ref_group

    def missing() -> UnresolvedDestination:
        return UnresolvedDestination.of(dest.where, f"no {kind} {ns}/{name} in the manifests")

    if kind == "Service" and group in (SERVING_GROUP, ""):
        # A Knative Service, or the Kubernetes Service Knative makes for it (same name).
        if m.service(ns, name) is None:
            raise missing()
        return f"http://{name}.{ns}.svc.cluster.local"
    if kind == "Broker" and group in (EVENTING_GROUP, ""):
        if m.find("Broker", ns, name) is None:
            raise missing()
        return f"{BROKER_INGRESS}/{ns}/{name}"
    if kind in ("Sequence", "Parallel") and group == FLOWS_GROUP:
        if m.find(kind, ns, name) is None:
            raise missing()
        # Imported here: flows reads its own destinations with this module.
        from knfn.eventing.flows import parallel_host, sequence_host

        host = sequence_host if kind == "Sequence" else parallel_host
        return "http://" + host(ns, name)
    raise UnresolvedDestination.of(
        dest.where,
        f"cannot deliver to a {kind} ({dest.ref_api_version}): only a Knative Service, a "
        "Kubernetes Service, a Broker, a Sequence or a Parallel can be a destination here",
    )
