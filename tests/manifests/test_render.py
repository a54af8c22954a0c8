"""Every kustomization renders, and each overlay holds the whole pipeline."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import manifest_checks as mc
import manifest_pipeline as pipeline
import pytest
from manifest_pipeline import KUSTOMIZATIONS


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders(renders: dict[str, list[mc.Obj]], name: str) -> None:
    """`kubectl kustomize` renders each kustomization to at least one object."""
    assert renders[name], f"{name} rendered nothing"


def test_render_error_carries_kubectl_message(kubectl: Path, tmp_path: Path) -> None:
    """A kustomization listing a missing file fails with kubectl's own message."""
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(mc.RenderError, match=r"missing\.yaml"):
        mc.render(kubectl, tmp_path)


@pytest.mark.parametrize(
    ("overlay", "postgres"),
    [("dev", pipeline.DEV_POSTGRES), ("prod", pipeline.PROD_POSTGRES)],
)
def test_overlay_holds_whole_pipeline(
    renders: dict[str, list[mc.Obj]], overlay: str, postgres: tuple[str, str, str]
) -> None:
    """Each overlay has every function Service, the broker, all triggers, the SinkBindings,
    the PingSource, the admin Jobs, MinIO and Postgres."""
    objs = renders[f"knative/overlays/{overlay}"]
    assert mc.check_required(objs, pipeline.required(postgres)) == []


def test_required_reports_missing_object(dev: list[mc.Obj]) -> None:
    """Dropping the thumbnail Service from a render is reported by name."""
    objs = [o for o in dev if mc.describe(o) != "Service.serving.knative.dev default/thumbnail"]
    problems = mc.check_required(objs, pipeline.required(pipeline.DEV_POSTGRES))
    assert problems == ["missing Service.serving.knative.dev thumbnail"]


def test_triggers_route_the_documented_event_types(dev: list[mc.Obj]) -> None:
    """Each trigger filters on its CloudEvent type (or nothing) and calls its subscriber."""
    for name, (subscriber, event_type) in pipeline.TRIGGERS.items():
        trigger = mc.find(dev, "Trigger", name, mc.EVENTING)
        assert trigger is not None
        spec = trigger["spec"]
        assert spec["subscriber"]["ref"]["name"] == subscriber
        attributes = (spec.get("filter") or {}).get("attributes") or {}
        assert attributes == ({"type": event_type} if event_type else {})


def test_broker_delivery_matches_contract(dev: list[mc.Obj]) -> None:
    """retry 5, exponential from PT0.2S, dead letters to the dead-letters Service."""
    broker = mc.find(dev, "Broker", "default", mc.EVENTING)
    assert broker is not None
    delivery = broker["spec"]["delivery"]
    assert delivery["retry"] == 5
    assert delivery["backoffPolicy"] == "exponential"
    assert delivery["backoffDelay"] == "PT0.2S"
    assert delivery["deadLetterSink"]["ref"]["name"] == "dead-letters"


@pytest.mark.parametrize(("overlay", "klass"), [("dev", "MTChannelBasedBroker"), ("prod", "Kafka")])
def test_broker_class_per_overlay(
    renders: dict[str, list[mc.Obj]], overlay: str, klass: str
) -> None:
    """dev uses the channel-based broker, prod the Kafka broker with its own topic config."""
    broker = mc.find(renders[f"knative/overlays/{overlay}"], "Broker", "default", mc.EVENTING)
    assert broker is not None
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == klass
    config = broker["spec"]["config"]
    assert (config["kind"], config["namespace"]) == ("ConfigMap", "knative-eventing")


def test_prod_carries_no_secret_templates(prod: list[mc.Obj], dev: list[mc.Obj]) -> None:
    """Placeholder Secrets are applied in dev only; prod expects real ones made out of band."""
    assert mc.of_kind(dev, "Secret", "")
    assert mc.of_kind(prod, "Secret", "") == []


def test_prod_keeps_latency_critical_functions_warm(prod: list[mc.Obj]) -> None:
    """query and ingest never scale to zero in prod; the rest still may."""
    scale = {mc.describe(k).split("/")[-1]: mc._min_scale(k) for k in mc.knative_services(prod)}
    assert scale["query"] >= 1
    assert scale["ingest"] >= 1
    assert scale["hello"] == 0


def test_base_is_plain_yaml(repo: Path) -> None:
    """knative/base lists plain files only, each object naming its namespace (knfn reads it)."""
    assert mc.check_plain_base(repo / "knative/base") == []


def test_plain_base_check_rejects_patches_and_missing_namespace(repo: Path, tmp_path: Path) -> None:
    """A base with a patches: entry, a directory resource and an object without a namespace
    fails, each named."""
    base = tmp_path / "base"
    shutil.copytree(repo / "knative/base", base)
    (base / "sub").mkdir()
    kustomization = (base / "kustomization.yaml").read_text()
    kustomization += "  - sub\npatches:\n  - path: p.yaml\n"
    (base / "kustomization.yaml").write_text(kustomization)
    hello = base / "service-hello.yaml"
    hello.write_text(hello.read_text().replace("  namespace: default\n", "", 1))
    problems = mc.check_plain_base(base)
    assert any("only resources: is allowed" in p and "patches" in p for p in problems)
    assert any("'sub' is not a plain file" in p for p in problems)
    assert any("service-hello.yaml" in p and "no metadata.namespace" in p for p in problems)


def test_base_render_equals_files_read_directly(
    repo: Path, renders: dict[str, list[mc.Obj]]
) -> None:
    """Reading the base files with PyYAML (as knfn does) gives exactly what kustomize renders."""
    import yaml

    listed = yaml.safe_load((repo / "knative/base/kustomization.yaml").read_text())["resources"]
    direct = [
        obj
        for entry in listed
        for obj in mc.load_documents((repo / "knative/base" / entry).read_text())
    ]

    def key(o: mc.Obj) -> str:
        return mc.describe(o)

    assert sorted(map(key, direct)) == sorted(map(key, renders["knative/base"]))
    rendered = {key(o): o for o in renders["knative/base"]}
    for obj in direct:
        assert rendered[key(obj)] == copy.deepcopy(obj), key(obj)
