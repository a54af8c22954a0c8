"""What knfn accepts or refuses, row by row against what Knative's webhook and reconcilers do.

Each row is a small manifest, Knative's answer to it, and the upstream file whose rule decides it
(knative/serving and knative/eventing at the paths given). ACCEPT and REFUSE are the webhook's
answer; NOT_READY is a manifest the webhook accepts whose reconciler then marks the object
Ready=False. knfn refuses those by default (nearly always a typo) and, with
``allow_not_ready`` (``knfn dev --allow-not-ready-triggers``), loads them as the cluster does.
The few places where knfn is stricter than Knative on purpose are listed apart, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from knfn import manifests
from knfn.eventing import broker as broker_ingress
from knfn.eventing import config as eventing_config

ACCEPT, REFUSE, NOT_READY = "accept", "refuse", "not ready"

SERVING = "knative/serving pkg/apis/serving"
EVENTING = "knative/eventing pkg"


def svc(
    name: str = "hello",
    *,
    spec: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    own_annotations: Mapping[str, str] | None = None,
    template_name: str | None = None,
    traffic: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Knative Service with one container, and whatever the row sets."""
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if own_annotations:
        meta["annotations"] = dict(own_annotations)
    template_meta: dict[str, Any] = {"annotations": dict(annotations or {})}
    if template_name:
        template_meta["name"] = template_name
    container: dict[str, Any] = {"image": f"knfn/{name}"}
    if env:
        container["env"] = env
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "template": {
                "metadata": template_meta,
                "spec": {**(spec or {}), "containers": [container]},
            }
        },
    }
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return doc


def broker(name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": name, "namespace": "default"},
    }


def trigger(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "on-upload", "namespace": "default"},
        "spec": dict(spec),
    }


def autoscaler_config(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
        "data": {k.replace("_", "-"): v for k, v in data.items()},
    }


def ann(**values: str) -> dict[str, str]:
    return {f"autoscaling.knative.dev/{k.replace('_', '-')}": v for k, v in values.items()}


TO_HELLO = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "hello"}}


@dataclass(frozen=True)
class Case:
    name: str
    docs: list[dict[str, Any]]
    knative: str  # ACCEPT | REFUSE | NOT_READY
    upstream: str  # the file whose rule decides it
    field: str = ""  # REFUSE and NOT_READY: the field knfn's message names


CASES = [
    # -- Service, revision template (serving) ------------------------------------------------
    Case("a plain Service", [svc()], ACCEPT, f"{SERVING}/v1/service_validation.go"),
    Case("timeoutSeconds 0 is the default, 300", [svc(spec={"timeoutSeconds": 0})], ACCEPT,
         f"{SERVING}/v1/revision_defaults.go"),
    Case("timeoutSeconds above max-revision-timeout-seconds", [svc(spec={"timeoutSeconds": 601})],
         REFUSE, f"{SERVING}/v1/revision_validation.go", "timeoutSeconds"),
    Case("timeoutSeconds negative", [svc(spec={"timeoutSeconds": -1})], REFUSE,
         f"{SERVING}/v1/revision_validation.go", "timeoutSeconds"),
    Case("responseStartTimeoutSeconds 0 sets no timer",
         [svc(spec={"responseStartTimeoutSeconds": 0})], ACCEPT,
         f"{SERVING}/v1/revision_defaults.go"),
    Case("containerConcurrency 0 (unlimited)", [svc(spec={"containerConcurrency": 0})], ACCEPT,
         f"{SERVING}/metadata_validation.go"),
    Case("containerConcurrency above 1000", [svc(spec={"containerConcurrency": 1001})], REFUSE,
         f"{SERVING}/metadata_validation.go", "containerConcurrency"),
    Case("a reserved env var", [svc(env=[{"name": "K_SERVICE", "value": "x"}])], REFUSE,
         f"{SERVING}/k8s_validation.go", "env[0]"),
    Case("revision name with the Service's prefix", [svc(template_name="hello-v1")], ACCEPT,
         f"{SERVING}/v1/revision_validation.go"),
    Case("revision name without the Service's prefix", [svc(template_name="other-v1")], REFUSE,
         f"{SERVING}/v1/revision_validation.go", "spec.template.metadata.name"),
    Case("revision name not a DNS-1035 label", [svc(template_name="hello-V1")], REFUSE,
         f"{SERVING}/v1/revision_validation.go", "spec.template.metadata.name"),
    # -- traffic (serving) --------------------------------------------------------------------
    Case("a tag that is a DNS-1035 label",
         [svc(traffic=[{"latestRevision": True, "percent": 100, "tag": "canary"}])], ACCEPT,
         f"{SERVING}/v1/route_validation.go"),
    Case("a tag starting with a digit",
         [svc(traffic=[{"latestRevision": True, "percent": 100, "tag": "1canary"}])], REFUSE,
         f"{SERVING}/v1/route_validation.go", "spec.traffic"),
    Case("a tag used twice",
         [svc(traffic=[{"latestRevision": True, "percent": 50, "tag": "a"},
                       {"revisionName": "hello-00001", "percent": 50, "tag": "a"}])],
         REFUSE, f"{SERVING}/v1/route_validation.go", "spec.traffic"),
    Case("percents that do not sum to 100",
         [svc(traffic=[{"latestRevision": True, "percent": 90}])], REFUSE,
         f"{SERVING}/v1/route_validation.go", "spec.traffic"),
    Case("an entry with neither revisionName nor latestRevision", [svc(traffic=[{"percent": 100}])],
         ACCEPT, f"{SERVING}/v1/route_defaults.go"),
    Case("revisionName with latestRevision: true",
         [svc(traffic=[{"revisionName": "hello-00001", "latestRevision": True, "percent": 100}])],
         REFUSE, f"{SERVING}/v1/route_validation.go", "spec.traffic"),
    Case("a revision at 0% without a tag",
         [svc(traffic=[{"revisionName": "hello-00001", "percent": 0},
                       {"latestRevision": True, "percent": 100}])],
         ACCEPT, f"{SERVING}/v1/route_validation.go"),
    # -- autoscaling annotations (serving) ---------------------------------------------------
    Case("autoscaling annotations on the Service itself", [svc(own_annotations=ann(min_scale="1"))],
         REFUSE, f"{SERVING}/metadata_validation.go", "metadata.annotations"),
    Case("an unknown autoscaling.knative.dev key", [svc(annotations=ann(minscale="1"))], ACCEPT,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go"),
    Case("a global-only key as an annotation", [svc(annotations=ann(enable_scale_to_zero="false"))],
         ACCEPT, "knative/serving pkg/apis/autoscaling/annotation_validation.go"),
    Case("min-scale negative", [svc(annotations=ann(min_scale="-1"))], REFUSE,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),
    Case("max-scale below min-scale", [svc(annotations=ann(min_scale="2", max_scale="1"))], REFUSE,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),
    Case("window below 6s", [svc(annotations=ann(window="2s"))], REFUSE,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),
    Case("metric cpu under the KPA", [svc(annotations=ann(metric="cpu"))], REFUSE,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),
    Case("the HPA class on cpu",
         [svc(annotations={**ann(metric="cpu"), **{"autoscaling.knative.dev/class":
                                                    "hpa.autoscaling.knative.dev"}})],
         ACCEPT, "knative/serving pkg/apis/autoscaling/annotation_validation.go"),
    Case("an unknown class in the knative.dev domain",
         [svc(annotations={"autoscaling.knative.dev/class": "foo.autoscaling.knative.dev"})],
         REFUSE, "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),
    Case("initial-scale 0 by default", [svc(annotations=ann(initial_scale="0"))], REFUSE,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),
    Case("initial-scale 0 with allow-zero-initial-scale",
         [autoscaler_config(allow_zero_initial_scale="true"),
          svc(annotations=ann(initial_scale="0"))], ACCEPT,
         "knative/serving pkg/autoscaler/config/config.go, annotation_validation.go"),
    Case("initial-scale 0 in config-autoscaler without allow-zero-initial-scale",
         [autoscaler_config(initial_scale="0"), svc()], REFUSE,
         "knative/serving pkg/autoscaler/config/config.go", "data"),
    # -- Trigger (eventing) -------------------------------------------------------------------
    Case("a Trigger to a Service",
         [svc(), broker(), trigger({"broker": "default", "subscriber": TO_HELLO})], ACCEPT,
         f"{EVENTING}/apis/eventing/v1/trigger_validation.go"),
    Case("a Trigger without spec.broker", [svc(), broker(), trigger({"subscriber": TO_HELLO})],
         REFUSE, f"{EVENTING}/apis/eventing/v1/trigger_validation.go", "spec.broker"),
    Case("a Trigger without a subscriber", [svc(), broker(), trigger({"broker": "default"})],
         REFUSE, f"{EVENTING}/apis/eventing/v1/trigger_validation.go", "spec.subscriber"),
    Case("a filter attribute that is not lowercase",
         [svc(), broker(), trigger({"broker": "default", "subscriber": TO_HELLO,
                                    "filter": {"attributes": {"Type": "x"}}})],
         REFUSE, f"{EVENTING}/apis/eventing/v1/trigger_validation.go", "spec.filter"),
    Case("delivery.retry negative",
         [svc(), broker(), trigger({"broker": "default", "subscriber": TO_HELLO,
                                    "delivery": {"retry": -1}})],
         REFUSE, f"{EVENTING}/apis/duck/v1/delivery_types.go", "spec"),
    Case("a Trigger to a Broker that does not exist",
         [svc(), broker(), trigger({"broker": "uploads", "subscriber": TO_HELLO})],
         NOT_READY, f"{EVENTING}/reconciler/broker/trigger/trigger.go", "spec.broker"),
    Case("a Trigger to a Service that does not exist",
         [svc(), broker(), trigger({"broker": "default", "subscriber": {"ref": {
             "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "helo"}}})],
         NOT_READY, f"{EVENTING}/reconciler/broker/trigger/trigger.go", "spec.subscriber"),
    Case("a dead-letter sink that does not exist",
         [svc(), broker(), trigger({"broker": "default", "subscriber": TO_HELLO, "delivery": {
             "deadLetterSink": {"ref": {"apiVersion": "serving.knative.dev/v1",
                                        "kind": "Service", "name": "dead-letters"}}}})],
         NOT_READY, f"{EVENTING}/reconciler/broker/trigger/trigger.go",
         "spec.delivery.deadLetterSink"),
]  # fmt: skip

# Where knfn refuses what Knative accepts, on purpose: it could not run what it accepted.
KNFN_STRICTER = [
    Case("a class outside knative.dev (a custom autoscaler)",
         [svc(annotations={"autoscaling.knative.dev/class": "example.com/custom"})], ACCEPT,
         "knative/serving pkg/apis/autoscaling/annotation_validation.go",
         "spec.template.metadata.annotations"),  # knfn runs no autoscaler but its own
    Case("env valueFrom", [svc(env=[{"name": "X", "valueFrom": {"secretKeyRef": {
        "name": "s", "key": "k"}}}])], ACCEPT, f"{SERVING}/k8s_validation.go",
         "env[0]"),  # knfn resolves env from envFrom only
]  # fmt: skip


def load(tmp_path: Path, docs: list[dict[str, Any]], allow_not_ready: bool = False) -> Any:
    """The manifests and eventing config of docs, as `knfn dev` loads them."""
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    m = manifests.load(base)
    return m, eventing_config.load(m, allow_not_ready)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_knfn_accepts_and_refuses_as_knative(tmp_path: Path, case: Case) -> None:
    """The row's manifest is accepted or refused as upstream's file decides (row.upstream);
    a refusal names the file and the field."""
    if case.knative == ACCEPT:
        _, cfg = load(tmp_path, case.docs)
        assert cfg.not_ready == ()
        return
    with pytest.raises(manifests.ManifestError) as info:
        load(tmp_path, case.docs)
    assert case.field in info.value.field, str(info.value)
    assert "objects.yaml" in str(info.value.path)
    if case.knative == NOT_READY:
        _, cfg = load(tmp_path, case.docs, allow_not_ready=True)
        [not_ready] = cfg.not_ready
        assert cfg.triggers == () and not_ready.name == "on-upload"
        assert case.field in not_ready.message


@pytest.mark.parametrize("case", KNFN_STRICTER, ids=[c.name for c in KNFN_STRICTER])
def test_knfn_is_stricter_only_where_it_could_not_run_the_object(
    tmp_path: Path, case: Case
) -> None:
    """Knative accepts these; knfn refuses them, naming the field, because it cannot run them."""
    assert case.knative == ACCEPT
    with pytest.raises(manifests.ManifestError) as info:
        load(tmp_path, case.docs)
    assert case.field in info.value.field


def test_accepted_values_are_defaulted_as_knative_defaults_them(tmp_path: Path) -> None:
    """timeoutSeconds 0 runs with 300 (revision_defaults.go); responseStartTimeoutSeconds 0
    leaves only timeoutSeconds (no response-start timer in queue-proxy)."""
    m, _ = load(tmp_path, [svc(spec={"timeoutSeconds": 0, "responseStartTimeoutSeconds": 0})])
    assert (m.services[0].timeout_seconds, m.services[0].response_start_timeout_seconds) == (
        300,
        300,
    )


def test_accepted_but_ignored_annotations_are_warned_about(tmp_path: Path) -> None:
    """An unknown autoscaling key loads, with a warning naming file, object, key, value and the
    closest known key."""
    m, _ = load(tmp_path, [svc(annotations=ann(minscale="1"))])
    [warning] = m.warnings
    assert "objects.yaml: Service hello: spec.template.metadata.annotations" in warning
    assert "autoscaling.knative.dev/minscale='1'" in warning
    assert "did you mean autoscaling.knative.dev/min-scale?" in warning


def test_a_missing_broker_is_named_with_the_closest_one(tmp_path: Path) -> None:
    """knfn's refusal of a Trigger to a missing Broker suggests the Broker meant."""
    docs = [svc(), broker(), trigger({"broker": "defualt", "subscriber": TO_HELLO})]
    with pytest.raises(
        manifests.ManifestError, match="no Broker default/defualt; did you mean default"
    ):
        load(tmp_path, docs)


def test_not_ready_triggers_show_in_status_with_knatives_condition(tmp_path: Path) -> None:
    """With allow_not_ready the Trigger is in /status's not_ready_triggers with the condition
    and reason the upstream reconciler sets, and no broker lists it."""
    docs = [svc(), broker(), trigger({"broker": "uploads", "subscriber": TO_HELLO})]
    _, cfg = load(tmp_path, docs, allow_not_ready=True)
    status = broker_ingress.status_of(cfg, {})
    assert status["brokers"][0]["triggers"] == []
    [entry] = status["not_ready_triggers"]
    assert entry["ready"] is False and entry["broker"] == "uploads"
    assert (entry["condition"], entry["reason"]) == ("BrokerReady", "BrokerDoesNotExist")
    assert "no Broker default/uploads" in entry["message"]
