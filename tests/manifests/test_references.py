"""Everything a manifest points at exists; disruption budgets and the quota add up."""

from __future__ import annotations

import copy

import manifest_checks as mc
import manifest_pipeline as pipeline
import pytest

# Objects the renders point at without containing them.
INSTALLED = (
    # shipped by Knative Eventing (eventing-core.yaml, config/core/configmaps)
    mc.External("ConfigMap", "config-br-default-channel", "knative-eventing"),
)
PROD_OUT_OF_BAND = (
    *INSTALLED,
    # created by hand in prod (docs/deploy.md); the overlay removes the templates
    mc.External("Secret", "postgres-credentials"),
    mc.External("Secret", "s3-credentials"),
    mc.External("Secret", "minio-webhook"),
    mc.External("Secret", "minio-root-credentials"),
)


def test_dev_references_resolve(dev: list[mc.Obj]) -> None:
    """In dev every ref (triggers, dead-letter sink, bindings, Secrets, ConfigMaps, keys)
    resolves inside the render."""
    assert mc.check_references(dev, INSTALLED) == []


def test_prod_references_resolve(prod: list[mc.Obj]) -> None:
    """In prod the same holds, given the Secrets created out of band."""
    assert mc.check_references(prod, PROD_OUT_OF_BAND) == []


def test_prod_secrets_must_be_declared_external(prod: list[mc.Obj]) -> None:
    """Without the out-of-band list, prod's missing Secrets are reported (so the check bites)."""
    problems = mc.check_references(prod, INSTALLED)
    assert any("Secret default/postgres-credentials is not in the render" in p for p in problems)
    assert any("Secret default/minio-webhook is not in the render" in p for p in problems)


def remove(objs: list[mc.Obj], described: str) -> list[mc.Obj]:
    out = [o for o in objs if mc.describe(o) != described]
    assert len(out) == len(objs) - 1, described
    return out


def test_missing_subscriber_is_reported(dev: list[mc.Obj]) -> None:
    """Deleting the thumbnail Service breaks the trigger that calls it."""
    objs = remove(dev, "Service.serving.knative.dev default/thumbnail")
    problems = mc.check_references(objs, INSTALLED)
    assert problems == [
        "Trigger.eventing.knative.dev default/thumbnail-object-stored: spec.subscriber.ref "
        "points at Service default/thumbnail, which is not in the render"
    ]


def test_missing_dead_letter_sink_is_reported(dev: list[mc.Obj]) -> None:
    """Deleting dead-letters breaks the broker's deadLetterSink."""
    objs = remove(dev, "Service.serving.knative.dev default/dead-letters")
    problems = mc.check_references(objs, INSTALLED)
    assert any(
        p.startswith("Broker.eventing.knative.dev default/default: spec.delivery.deadLetterSink")
        for p in problems
    )


def test_ref_to_core_service_does_not_count_as_knative_service(dev: list[mc.Obj]) -> None:
    """A subscriber ref names the API group: a core Service of the same name is not a match."""
    objs = copy.deepcopy(dev)
    trigger = mc.find(objs, "Trigger", "catalog-object-stored", mc.EVENTING)
    assert trigger is not None
    trigger["spec"]["subscriber"]["ref"] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "minio",
    }
    problems = mc.check_references(objs, INSTALLED)
    assert len(problems) == 1
    assert "points at Service default/minio" in problems[0]


def test_wrong_broker_binding_and_secret_key_are_reported(dev: list[mc.Obj]) -> None:
    """A trigger on an unknown broker, a SinkBinding for an unknown Service, and a secretKeyRef
    to a key the Secret lacks are each reported."""
    objs = copy.deepcopy(dev)
    trigger = mc.find(objs, "Trigger", "event-display-all", mc.EVENTING)
    binding = mc.find(objs, "SinkBinding", "ingest-to-broker", mc.SOURCES)
    minio = mc.find(objs, "StatefulSet", "minio", "apps")
    assert trigger and binding and minio
    trigger["spec"]["broker"] = "kafka"
    binding["spec"]["subject"]["name"] = "ingest-v2"
    env = minio["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0]["valueFrom"]["secretKeyRef"]["key"] = "TOKEN"
    problems = mc.check_references(objs, INSTALLED)
    assert len(problems) == 3
    assert any("spec.broker 'kafka'" in p for p in problems)
    assert any("spec.subject points at Service default/ingest-v2" in p for p in problems)
    assert any("Secret minio-webhook has no key 'TOKEN'" in p for p in problems)


def test_missing_configmap_is_reported(dev: list[mc.Obj]) -> None:
    """Every function reads pipeline-config: removing it names each reader."""
    objs = remove(dev, "ConfigMap default/pipeline-config")
    problems = mc.check_references(objs, INSTALLED)
    assert len([p for p in problems if "ConfigMap default/pipeline-config" in p]) >= 8


# ---- disruption budgets ---------------------------------------------------------------------


def test_prod_disruption_budgets_select_pods(prod: list[mc.Obj]) -> None:
    """Every PDB in prod selects real pods and leaves room for a drain."""
    assert [mc.describe(p) for p in mc.of_kind(prod, "PodDisruptionBudget", "policy")]
    assert mc.check_disruption_budgets(prod) == []


def test_pdb_that_selects_nothing_is_reported(prod: list[mc.Obj]) -> None:
    """A PDB with a misspelt label value protects nothing."""
    objs = copy.deepcopy(prod)
    pdb = mc.find(objs, "PodDisruptionBudget", "query", "policy")
    assert pdb is not None
    pdb["spec"]["selector"]["matchLabels"] = {"serving.knative.dev/service": "querry"}
    problems = mc.check_disruption_budgets(objs)
    assert problems == [
        "PodDisruptionBudget.policy default/query: selector "
        "{'serving.knative.dev/service': 'querry'} matches no pods in the render"
    ]


def test_pdb_blocking_drains_is_reported(prod: list[mc.Obj]) -> None:
    """minAvailable 1 on a Service whose min-scale is 1 would block every node drain."""
    objs = copy.deepcopy(prod)
    ksvc = mc.find(objs, "Service", "ingest", mc.SERVING)
    assert ksvc is not None
    ksvc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = "1"
    problems = mc.check_disruption_budgets(objs)
    assert len(problems) == 1
    assert "min-scale=1" in problems[0]


# ---- quota ----------------------------------------------------------------------------------


def test_prod_quota_covers_full_scale(prod: list[mc.Obj]) -> None:
    """The namespace quota holds every Service at max-scale plus MinIO, Postgres and Jobs."""
    assert mc.of_kind(prod, "ResourceQuota", "")
    assert mc.check_quota(prod) == []


def test_quota_numbers(prod: list[mc.Obj]) -> None:
    """The totals documented in resource-quota.yaml and docs/scaling.md."""
    usage = mc.maximum_usage(pipeline.sample_only(prod))
    assert usage.cpu_requests == pytest.approx(16.475)
    assert usage.memory_requests / 2**30 == pytest.approx(43.72, abs=0.01)
    assert usage.memory_limits / 2**30 == pytest.approx(98.31, abs=0.01)
    assert usage.pods == 83


def test_quota_too_small_or_unbounded_service_is_reported(prod: list[mc.Obj]) -> None:
    """Raising hello's max-scale past the quota, or dropping it, is caught."""
    objs = copy.deepcopy(prod)
    hello = mc.find(objs, "Service", "hello", mc.SERVING)
    assert hello is not None
    annotations = hello["spec"]["template"]["metadata"]["annotations"]
    annotations["autoscaling.knative.dev/max-scale"] = "100"
    problems = mc.check_quota(objs)
    assert any("spec.hard.requests.cpu" in p for p in problems)
    del annotations["autoscaling.knative.dev/max-scale"]
    problems = mc.check_quota(objs)
    assert any("default/hello has no max-scale" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", 0.25), ("4Gi", 4 * 2**30), ("64Mi", 64 * 2**20), ("2", 2.0), (1, 1.0), ("1k", 1e3)],
)
def test_quantity(text: str | int, value: float) -> None:
    """Kubernetes quantities parse to plain numbers."""
    assert mc.quantity(text) == pytest.approx(value)


def test_quantity_rejects_garbage() -> None:
    """An unknown suffix is an error, not a silent zero."""
    with pytest.raises(ValueError, match="not a quantity"):
        mc.quantity("4GB")
