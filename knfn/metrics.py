"""Prometheus metrics of the serving runtime, in one registry served at the admin API's /metrics:
knfn's own (``knfn_*``) and Knative's autoscaler metrics under their upstream names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


# ---- Knative's autoscaler metrics -------------------------------------------------------------
# The names Knative's autoscaler exports to Prometheus (its component "autoscaler" before each
# view name), so a Grafana dashboard built for Knative (the "Knative Serving - Scaling
# Debugging" one) reads knfn as it is. From knative/serving:
# - pkg/autoscaler/scaling/stats_reporter.go: desired_pods, excess_burst_capacity,
#   stable/panic_request_concurrency, target_concurrency_per_pod, stable/panic/
#   target_requests_per_second, panic_mode (reported by the decider, scaling/autoscaler.go);
# - pkg/reconciler/autoscaling/kpa/stats_reporter.go: requested_pods, actual_pods (ready),
#   not_ready_pods, pending_pods, terminating_pods (reported by kpa.go reportMetrics);
# - labels: pkg/metrics/key.go CommonRevisionKeys (namespace_name, service_name,
#   configuration_name, revision_name; a Service's Configuration carries the Service's name).
# Upstream's newer OpenTelemetry names (kn_revision_pods_desired, ...; scaling/metrics.go) are
# not exported: the published dashboards query these. Like upstream, a revision reports the
# concurrency gauges or the RPS ones, whichever metric it scales on.
KNATIVE_REVISION_LABELS = ("namespace_name", "service_name", "configuration_name", "revision_name")
KNATIVE_AUTOSCALER_METRICS: dict[str, str] = {
    "autoscaler_desired_pods": "Number of pods autoscaler wants to allocate",
    "autoscaler_requested_pods": "Number of pods autoscaler requested (from the replica budget)",
    "autoscaler_actual_pods": "Number of pods that are allocated currently (ready)",
    "autoscaler_not_ready_pods": "Number of pods that are not ready currently",
    "autoscaler_pending_pods": "Number of pods requested and not started yet",
    "autoscaler_terminating_pods": "Number of pods that are terminating currently",
    "autoscaler_excess_burst_capacity": "Spare capacity beyond the target burst capacity",
    "autoscaler_stable_request_concurrency": "Average of requests count over the stable window",
    "autoscaler_panic_request_concurrency": "Average of requests count over the panic window",
    "autoscaler_target_concurrency_per_pod": "The desired number of concurrent requests per pod",
    "autoscaler_stable_requests_per_second": "Average requests-per-second over the stable window",
    "autoscaler_panic_requests_per_second": "Average requests-per-second over the panic window",
    "autoscaler_target_requests_per_second": "The desired requests-per-second for each pod",
    "autoscaler_panic_mode": "1 if autoscaler is in panic mode, 0 otherwise",
}
# The activator (knfn/serving/activator.py), read with the metrics above. Upstream has no
# metric of the ServerlessService's mode (``kubectl get sks`` shows it as MODE), hence a knfn
# name; the requests its queue holds are the activator's own gauge ``kn.revision.request.queued``
# (pkg/activator/handler/metrics.go), under the name its Prometheus exporter gives it.
ACTIVATOR_METRICS: dict[str, str] = {
    "knfn_activator_in_path": (
        "1 while the revision's requests go through the activator (proxy mode), 0 while they "
        "go straight to its replicas (serve mode)"
    ),
    "kn_revision_request_queued": (
        "Number of requests currently queued in the activator waiting for capacity"
    ),
}


@dataclass(frozen=True)
class RevisionAutoscaling:
    """One revision as the autoscaler metrics see it: its ``autoscaler`` object of /status
    (knfn/serving/kpa_status.py) and its replicas by state."""

    namespace: str
    service: str
    revision: str
    autoscaler: Mapping[str, Any]
    requested: int
    not_ready: int
    pending: int
    terminating: int
    activator_queued: int = 0


def knative_autoscaler_samples(rev: RevisionAutoscaling) -> dict[str, float]:
    """The value of each Knative autoscaler metric for rev (the ones its metric reports)."""
    a = rev.autoscaler
    if a.get("metric") == "rps":
        load = {
            "autoscaler_stable_requests_per_second": a["stable_value"],
            "autoscaler_panic_requests_per_second": a["panic_value"],
            "autoscaler_target_requests_per_second": a["target"],
        }
    else:
        load = {
            "autoscaler_stable_request_concurrency": a["stable_value"],
            "autoscaler_panic_request_concurrency": a["panic_value"],
            "autoscaler_target_concurrency_per_pod": a["target"],
        }
    return {
        "autoscaler_desired_pods": a["desired_pods"],
        "autoscaler_requested_pods": rev.requested,
        "autoscaler_actual_pods": a["ready_pods"],
        "autoscaler_not_ready_pods": rev.not_ready,
        "autoscaler_pending_pods": rev.pending,
        "autoscaler_terminating_pods": rev.terminating,
        "autoscaler_excess_burst_capacity": a["excess_burst_capacity"],
        **load,
        "autoscaler_panic_mode": 1 if a["panic_mode"] else 0,
        "knfn_activator_in_path": 1 if a.get("activator_in_path") else 0,
        "kn_revision_request_queued": rev.activator_queued,
    }


class KnativeAutoscalerCollector(Collector):
    """Reads every revision at scrape time, so /metrics and /status agree by construction and
    a revision that is gone leaves no stale series behind."""

    def __init__(self) -> None:
        self._source: Callable[[], Iterable[RevisionAutoscaling]] = tuple

    def watch(self, source: Callable[[], Iterable[RevisionAutoscaling]]) -> None:
        """Export what source returns (the running Serving's revisions) from now on."""
        self._source = source

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, text, labels=KNATIVE_REVISION_LABELS)
            for name, text in (KNATIVE_AUTOSCALER_METRICS | ACTIVATOR_METRICS).items()
        }
        for rev in self._source():
            labels = [rev.namespace, rev.service, rev.service, rev.revision]
            for name, value in knative_autoscaler_samples(rev).items():
                families[name].add_metric(labels, float(value))
        yield from families.values()


KNATIVE_AUTOSCALER = KnativeAutoscalerCollector()
REGISTRY.register(KNATIVE_AUTOSCALER)
