"""Knative objects: known fields per kind, Serving rules, autoscaling annotations, and the
function contract (a Service named X runs FUNCTION_TARGET from functions/X/main.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import manifest_checks as mc
import manifest_pipeline as pipeline
import pytest

from knfn import schema as knfn_schema


def changed(objs: list[mc.Obj], described: str, change: Callable[[mc.Obj], None]) -> list[mc.Obj]:
    """A deep copy of `objs` with `change` applied to the object `described`."""
    out = copy.deepcopy(objs)
    targets = [o for o in out if mc.describe(o) == described]
    assert targets, f"{described} not in render"
    for obj in targets:
        change(obj)
    return out


HELLO = "Service.serving.knative.dev default/hello"


def template(obj: mc.Obj) -> mc.Obj:
    spec: mc.Obj = obj["spec"]["template"]
    return spec


# ---- known fields per kind ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_custom_resources_follow_schema(renders: dict[str, list[mc.Obj]], overlay: str) -> None:
    """Every Knative and CNPG object uses only known fields, with the right types."""
    assert mc.check_custom_schemas(renders[f"knative/overlays/{overlay}"]) == []


def test_schema_rejects_unknown_field_in_ksvc_container(dev: list[mc.Obj]) -> None:
    """A misspelt container field (readinesProbe) is named with its path."""

    def typo(obj: mc.Obj) -> None:
        container = template(obj)["spec"]["containers"][0]
        container["readinesProbe"] = container.pop("readinessProbe")

    problems = mc.check_custom_schemas(changed(dev, HELLO, typo))
    assert len(problems) == 1
    assert "default/hello" in problems[0]
    assert "unknown field 'readinesProbe'" in problems[0]


def test_schema_rejects_feature_gated_pod_fields(dev: list[mc.Obj]) -> None:
    """Pod-level securityContext and nodeSelector are off in a default Knative install."""

    def gated(obj: mc.Obj) -> None:
        template(obj)["spec"]["securityContext"] = {"runAsNonRoot": True}
        template(obj)["spec"]["nodeSelector"] = {"disk": "ssd"}

    problems = mc.check_custom_schemas(changed(dev, HELLO, gated))
    assert any("'securityContext'" in p for p in problems)
    assert any("'nodeSelector'" in p for p in problems)


def test_schema_rejects_wrong_type_and_missing_required(dev: list[mc.Obj]) -> None:
    """containerConcurrency as a string, and a Trigger without a subscriber, are reported."""
    objs = changed(
        dev, HELLO, lambda o: template(o)["spec"].__setitem__("containerConcurrency", "10")
    )
    objs = changed(
        objs,
        "Trigger.eventing.knative.dev default/catalog-object-stored",
        lambda o: o["spec"].pop("subscriber"),
    )
    problems = mc.check_custom_schemas(objs)
    assert any("containerConcurrency: expected integer" in p for p in problems)
    assert any(
        "catalog-object-stored" in p and "missing required field 'subscriber'" in p
        for p in problems
    )


def test_schema_rejects_unknown_kind(dev: list[mc.Obj]) -> None:
    """A custom resource with no schema here is reported, not silently skipped."""
    objs = [
        *dev,
        {
            "apiVersion": "messaging.knative.dev/v1",
            "kind": "Channel",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {},
        },
    ]
    assert mc.check_custom_schemas(objs) == [
        "Channel.messaging.knative.dev default/c: no schema for messaging.knative.dev/v1 Channel"
    ]


def test_schema_checks_delivery_and_sinkbinding_fields(dev: list[mc.Obj]) -> None:
    """A misspelt delivery field on the Broker and a SinkBinding without a sink both fail."""
    objs = changed(
        dev,
        "Broker.eventing.knative.dev default/default",
        lambda o: o["spec"]["delivery"].__setitem__("retries", 5),
    )
    objs = changed(
        objs,
        "SinkBinding.sources.knative.dev default/ingest-to-broker",
        lambda o: o["spec"].pop("sink"),
    )
    problems = mc.check_custom_schemas(objs)
    assert any("unknown field 'retries'" in p for p in problems)
    assert any("ingest-to-broker" in p and "'sink'" in p for p in problems)


def test_rules_beyond_names_only_name_fields_knfn_knows() -> None:
    """Required fields and off-by-default fields are paths through knfn's own known fields."""
    kinds = {kind: root for (_, kind), root in knfn_schema.KINDS.items()}
    paths = [(kind, p) for kind, rules in mc.REQUIRED.items() for p in rules]
    paths += [("Service", p) for p in mc.OFF_BY_DEFAULT]
    paths += [(kind, p) for kind in mc.REQUIRED for p in mc.REQUIRED_OF_EVERY]
    assert [(kind, p) for kind, p in paths if not mc.names_known_fields(kinds[kind], p)] == []
    assert not mc.names_known_fields(kinds["Service"], "spec.template.spec.containers[].imag")


# ---- Serving rules --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_serving_rules_hold(renders: dict[str, list[mc.Obj]], overlay: str) -> None:
    """Annotations, containerConcurrency, timeouts, env and ports are all acceptable."""
    assert mc.check_serving_rules(renders[f"knative/overlays/{overlay}"]) == []


def test_hello_has_autoscale_go_target(dev: list[mc.Obj]) -> None:
    """hello, the autoscaling demo, asks for 10 in-flight requests per replica."""
    hello = mc.find(dev, "Service", "hello", mc.SERVING)
    assert hello is not None
    assert template(hello)["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "10"


def test_serving_rejects_autoscaling_annotation_on_service_metadata(dev: list[mc.Obj]) -> None:
    """Autoscaling annotations on the Service itself are rejected by Knative's webhook."""

    def misplace(obj: mc.Obj) -> None:
        obj["metadata"]["annotations"] = {"autoscaling.knative.dev/min-scale": "1"}

    problems = mc.check_serving_rules(changed(dev, HELLO, misplace))
    assert len(problems) == 1
    assert "belong in spec.template.metadata.annotations" in problems[0]


def test_serving_rejects_out_of_range_concurrency_and_timeout(dev: list[mc.Obj]) -> None:
    """containerConcurrency 1001 and timeoutSeconds 601 exceed the install defaults."""

    def too_much(obj: mc.Obj) -> None:
        template(obj)["spec"]["containerConcurrency"] = 1001
        template(obj)["spec"]["timeoutSeconds"] = 601

    problems = mc.check_serving_rules(changed(dev, HELLO, too_much))
    assert any("containerConcurrency=1001" in p for p in problems)
    assert any("timeoutSeconds=601" in p for p in problems)


def test_serving_rejects_reserved_env_and_port(dev: list[mc.Obj]) -> None:
    """PORT is Knative's to set, and 8012 belongs to queue-proxy."""

    def reserve(obj: mc.Obj) -> None:
        container = template(obj)["spec"]["containers"][0]
        container["env"].append({"name": "PORT", "value": "9000"})
        container["ports"] = [{"containerPort": 8012}]

    problems = mc.check_serving_rules(changed(dev, HELLO, reserve))
    assert any("env PORT is reserved" in p for p in problems)
    assert any("port 8012 is reserved" in p for p in problems)


# ---- autoscaling annotations, value by value ------------------------------------------------


def ann(**values: str) -> dict[str, str]:
    """Annotations from keyword arguments (underscores become dashes)."""
    return {f"autoscaling.knative.dev/{k.replace('_', '-')}": v for k, v in values.items()}


@pytest.mark.parametrize(
    "annotations",
    [
        ann(target="10"),
        ann(target="0.01"),
        ann(min_scale="0", max_scale="0"),
        ann(min_scale="2", max_scale="10", activation_scale="3"),
        ann(window="6s"),
        ann(window="1h"),
        ann(window="1m30s"),
        ann(target_utilization_percentage="100"),
        ann(panic_window_percentage="1", panic_threshold_percentage="110"),
        ann(panic_threshold_percentage="1000"),
        ann(target_burst_capacity="-1"),
        ann(target_burst_capacity="0"),
        ann(scale_down_delay="0s"),
        ann(scale_down_delay="15m"),
        ann(initial_scale="1"),
        ann(metric="rps"),
        ann(**{"class": "hpa.autoscaling.knative.dev", "metric": "cpu"}),
        # older camelCase spellings are still read
        {"autoscaling.knative.dev/minScale": "1", "autoscaling.knative.dev/maxScale": "3"},
        {"autoscaling.knative.dev/targetBurstCapacity": "200"},
        {"autoscaling.knative.dev/scaleToZeroPodRetentionPeriod": "5m"},
        {"autoscaling.knative.dev/panicThresholdPercentage": "150.0"},
        {"serving.knative.dev/rollout-duration": "60s"},  # not an autoscaling key: ignored
    ],
)
def test_valid_annotations_pass(annotations: dict[str, str]) -> None:
    """Values inside upstream's ranges, in either spelling, are accepted."""
    assert mc.check_autoscaling_annotations(annotations, "x") == []


@pytest.mark.parametrize(
    ("annotations", "fragment"),
    [
        (ann(target="0.001"), "target"),
        (ann(target="ten"), "target"),
        (ann(min_scale="-1"), "min-scale"),
        (ann(min_scale="1.5"), "min-scale"),
        (ann(min_scale="5", max_scale="2"), "max-scale='2': is less than min-scale=5"),
        (
            {"autoscaling.knative.dev/minScale": "5", "autoscaling.knative.dev/maxScale": "2"},
            "maxScale='2': is less than min-scale=5",
        ),
        (ann(activation_scale="1"), "at least 2"),
        (ann(min_scale="3", activation_scale="2"), "is less than min-scale=3"),
        (ann(window="5s"), "between 6s and 3600s"),
        (ann(window="2h"), "between 6s and 3600s"),
        (ann(window="6500ms"), "whole seconds"),
        (ann(window="60"), "not a duration"),
        (ann(scale_down_delay="-1s"), "between 0s and 3600s"),
        (ann(target_utilization_percentage="0"), "[1, 100]"),
        (ann(target_utilization_percentage="101"), "[1, 100]"),
        (ann(panic_window_percentage="0.5"), "[1, 100]"),
        (ann(panic_threshold_percentage="100"), "[110, 1000]"),
        ({"autoscaling.knative.dev/panicThresholdPercentage": "1001"}, "[110, 1000]"),
        (ann(target_burst_capacity="-2"), ">= 0, or -1"),
        (ann(initial_scale="0"), "allow-zero-initial-scale"),
        (ann(metric="cpu"), "concurrency or rps"),
        (ann(**{"class": "foo.autoscaling.knative.dev"}), "must be kpa"),
        (ann(scale_to_zero_grace_period="30s"), "cluster-wide"),
        (ann(enable_scale_to_zero="false"), "cluster-wide"),
        (ann(minscale="1"), "unknown autoscaling annotation"),
        ({**ann(min_scale="1"), "autoscaling.knative.dev/minScale": "2"}, "is also set"),
        (
            ann(**{"class": "kpa.autoscaling.knative.dev", "metric_aggregation_algorithm": "max"}),
            "linear or weighted-exponential",
        ),
    ],
)
def test_invalid_annotations_fail(annotations: dict[str, str], fragment: str) -> None:
    """Each out-of-range or misspelt annotation is reported, naming the annotation."""
    problems = mc.check_autoscaling_annotations(annotations, "svc")
    assert problems, f"{annotations} passed"
    assert any(fragment in p for p in problems), problems
    assert all(p.startswith("svc: ") for p in problems)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("60s", 60.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("", None),
        ("60", None),
        ("1x", None),
        ("s", None),
    ],
)
def test_go_duration(text: str, seconds: float | None) -> None:
    """Durations parse as Go's time.ParseDuration would."""
    assert mc.parse_go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


# ---- function contract ----------------------------------------------------------------------


def test_every_service_runs_its_function(dev: list[mc.Obj], repo: Path) -> None:
    """Each Service's FUNCTION_TARGET is defined in functions/<service>/main.py.
    (Fails until every function folder exists: the functions are written separately.)"""
    assert mc.check_function_contract(dev, repo / "functions") == []


def test_function_targets_match_contract(dev: list[mc.Obj]) -> None:
    """Service names map to the agreed FUNCTION_TARGETs, all with the http signature."""
    targets = {}
    for ksvc in mc.knative_services(pipeline.sample_only(dev)):
        env = {e["name"]: e.get("value") for e in template(ksvc)["spec"]["containers"][0]["env"]}
        assert env["FUNCTION_SIGNATURE_TYPE"] == "http"
        targets[ksvc["metadata"]["name"]] = env["FUNCTION_TARGET"]
    assert targets == pipeline.FUNCTIONS


def fake_functions(root: Path) -> Path:
    """A functions/ tree where every function defines its target."""
    for name, target in pipeline.FUNCTIONS.items():
        (root / name).mkdir(parents=True)
        (root / name / "main.py").write_text(
            f"import x\n\n\ndef {target}(request):\n    return ''\n"
        )
    return root


def test_function_contract_passes_on_complete_tree(dev: list[mc.Obj], tmp_path: Path) -> None:
    """With every main.py defining its target, the contract check is clean."""
    objs = pipeline.sample_only(dev)
    assert mc.check_function_contract(objs, fake_functions(tmp_path / "functions")) == []


def test_function_contract_reports_missing_target_and_folder(
    dev: list[mc.Obj], tmp_path: Path
) -> None:
    """A main.py without `def <target>(` and a missing folder are both reported."""
    functions = fake_functions(tmp_path / "functions")
    (functions / "query" / "main.py").write_text("def other(request):\n    return ''\n")
    (functions / "catalog" / "main.py").unlink()
    problems = mc.check_function_contract(pipeline.sample_only(dev), functions)
    assert len(problems) == 2
    assert any("default/query" in p and "def query(" in p for p in problems)
    assert any("default/catalog" in p and "does not exist" in p for p in problems)


def test_function_contract_reports_wrong_env_and_image(dev: list[mc.Obj], tmp_path: Path) -> None:
    """A cloudevent signature type, a missing FUNCTION_TARGET and another function's image fail."""

    def break_it(obj: mc.Obj) -> None:
        container = template(obj)["spec"]["containers"][0]
        container["env"] = [{"name": "FUNCTION_SIGNATURE_TYPE", "value": "cloudevent"}]
        container["image"] = "dev.local/knfn/query:dev"

    problems = mc.check_function_contract(changed(dev, HELLO, break_it), fake_functions(tmp_path))
    assert any("FUNCTION_SIGNATURE_TYPE='cloudevent'" in p for p in problems)
    assert any("FUNCTION_TARGET is not set" in p for p in problems)
    assert any("not built from functions/hello/" in p for p in problems)


def test_readiness_is_a_tcp_probe(dev: list[mc.Obj]) -> None:
    """Every function is ready once it listens on $PORT. An HTTP GET probe would never pass for
    the event consumers and ingest, which answer GET with 405 (kit's require_method)."""
    for ksvc in mc.knative_services(dev):
        probe = template(ksvc)["spec"]["containers"][0]["readinessProbe"]
        assert "tcpSocket" in probe, ksvc["metadata"]["name"]
        assert "httpGet" not in probe, ksvc["metadata"]["name"]
