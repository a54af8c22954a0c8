"""What the sample pipeline must contain, in every overlay (the contract in docs/deploy.md)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# Every kustomization in the repository (paths from the repository root).
KUSTOMIZATIONS = (
    "knative/base",
    "knative/overlays/dev",
    "knative/overlays/prod",
    "minio/dev",
    "minio/prod",
    "postgres/dev",
    "postgres/prod",
)
# Knative Service name (= functions/<name>/) -> FUNCTION_TARGET.
FUNCTIONS: dict[str, str] = {
    "hello": "hello",
    "ingest": "ingest",
    "thumbnail": "thumbnail",
    "catalog": "catalog",
    "query": "query",
    "event-display": "display",
    "dead-letters": "dead_letters",
    "minio-events": "minio_events",
}
TRIGGERS: dict[str, tuple[str, str | None]] = {
    # trigger name -> (subscriber Service, CloudEvent type filter or None for everything)
    "thumbnail-object-stored": ("thumbnail", "dev.knfn.object.stored"),
    "catalog-object-stored": ("catalog", "dev.knfn.object.stored"),
    "catalog-thumbnail-created": ("catalog", "dev.knfn.thumbnail.created"),
    "event-display-all": ("event-display", None),
}
SINK_BOUND = ("ingest", "minio-events")


def required(postgres: tuple[str, str, str]) -> Iterator[tuple[str, str, str]]:
    """(kind, API group, name) every full overlay render must hold; `postgres` differs."""
    for name in FUNCTIONS:
        yield ("Service", "serving.knative.dev", name)
    yield ("Broker", "eventing.knative.dev", "default")
    for name in TRIGGERS:
        yield ("Trigger", "eventing.knative.dev", name)
    for name in SINK_BOUND:
        yield ("SinkBinding", "sources.knative.dev", f"{name}-to-broker")
    yield ("PingSource", "sources.knative.dev", "heartbeat")
    yield ("ConfigMap", "", "pipeline-config")
    yield ("Job", "batch", "migrate")
    yield ("Job", "batch", "buckets")
    yield ("StatefulSet", "apps", "minio")
    yield ("Service", "", "minio")
    yield ("Job", "batch", "minio-bucket-setup")
    yield postgres


DEV_POSTGRES = ("StatefulSet", "apps", "postgres")
PROD_POSTGRES = ("Cluster", "postgresql.cnpg.io", "pipeline-db")


def sample_only(objs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The render without the Knative Services that are not the sample pipeline's (made later
    with `knfn new`) and the Triggers subscribing them: for the tests that pin the pipeline's
    exact targets and totals, so that a new function does not break them."""

    def extra(obj: dict[str, Any]) -> bool:
        if obj.get("kind") == "Service" and str(obj.get("apiVersion")).startswith("serving."):
            return obj["metadata"]["name"] not in FUNCTIONS
        if obj.get("kind") == "Trigger":
            ref = ((obj.get("spec") or {}).get("subscriber") or {}).get("ref") or {}
            return ref.get("kind") == "Service" and ref.get("name") not in FUNCTIONS
        return False

    return [obj for obj in objs if not extra(obj)]
