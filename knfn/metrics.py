"""Prometheus metrics of the serving runtime, in one registry served at the admin API's /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
_REV = ("namespace", "service", "revision")

REQUESTS = Counter(
    "knfn_requests", "Requests answered by the gateway", (*_REV, "code"), registry=REGISTRY
)
LATENCY = Histogram(
    "knfn_request_duration_seconds",
    "Gateway request latency, from arrival to the end of the response",
    _REV,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
REPLICAS = Gauge(
    "knfn_replicas", "Replicas per revision by state", (*_REV, "state"), registry=REGISTRY
)
COLD_STARTS = Counter(
    "knfn_cold_starts", "Replicas started for a revision that had none ready", _REV,
    registry=REGISTRY,
)  # fmt: skip
COLD_START_SECONDS = Histogram(
    "knfn_cold_start_duration_seconds",
    "From a request arriving at a revision with no ready replica to the first one being ready",
    _REV,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
REPLICA_CRASHES = Counter(
    "knfn_replica_crashes", "Replicas that exited without being asked to", _REV, registry=REGISTRY
)
