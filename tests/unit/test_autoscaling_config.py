"""Autoscaling settings: config-autoscaler parsing, local overrides, revision annotations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from knfn.errors import KnfnError
from knfn.serving.autoscaler_config import (
    HPA,
    KPA,
    AutoscalerConfig,
    AutoscalingError,
    LocalOverrides,
    parse_duration,
    parse_local_override,
    with_local_overrides,
)
from knfn.serving.autoscaling import (
    RevisionScaling,
    annotation_warnings,
    resolve_revision_scaling,
    validate_annotations,
)

# The data of config/core/configmaps/autoscaler.yaml as shipped (values written as upstream
# writes them), plus the _example key every Knative ConfigMap carries.
SHIPPED = {
    "_example": "# a long comment block",
    "container-concurrency-target-percentage": "70",
    "container-concurrency-target-default": "100",
    "requests-per-second-target-default": "200",
    "target-burst-capacity": "211",
    "stable-window": "60s",
    "panic-window-percentage": "10.0",
    "panic-threshold-percentage": "200.0",
    "max-scale-up-rate": "1000.0",
    "max-scale-down-rate": "2.0",
    "enable-scale-to-zero": "true",
    "scale-to-zero-grace-period": "30s",
    "scale-to-zero-pod-retention-period": "0s",
    "pod-autoscaler-class": "kpa.autoscaling.knative.dev",
    "activator-capacity": "100.0",
    "initial-scale": "1",
    "allow-zero-initial-scale": "false",
    "min-scale": "0",
    "max-scale": "0",
    "scale-down-delay": "0s",
    "max-scale-limit": "0",
}


def ann(**values: str) -> dict[str, str]:
    """Annotations from keyword arguments (underscores become dashes)."""
    return {f"autoscaling.knative.dev/{k.replace('_', '-')}": v for k, v in values.items()}


# ---- config-autoscaler -----------------------------------------------------------------------


def test_defaults_are_upstreams() -> None:
    """An empty ConfigMap gives upstream's default for every key."""
    cfg = AutoscalerConfig.from_configmap({})
    assert cfg == AutoscalerConfig()
    assert (
        cfg.container_concurrency_target_default,
        cfg.container_concurrency_target_percentage,
        cfg.requests_per_second_target_default,
        cfg.target_burst_capacity,
    ) == (100, 70, 200, 211)
    assert (cfg.stable_window, cfg.panic_window_percentage, cfg.panic_threshold_percentage) == (
        60,
        10,
        200,
    )
    assert (cfg.max_scale_up_rate, cfg.max_scale_down_rate) == (1000, 2)
    assert cfg.enable_scale_to_zero is True and cfg.allow_zero_initial_scale is False
    assert (cfg.scale_to_zero_grace_period, cfg.scale_to_zero_pod_retention_period) == (30, 0)
    assert (cfg.scale_down_delay, cfg.initial_scale) == (0, 1)
    assert (cfg.min_scale, cfg.max_scale, cfg.max_scale_limit) == (0, 0, 0)
    assert (cfg.activator_capacity, cfg.pod_autoscaler_class, cfg.tick_interval) == (100, KPA, 2)


def test_shipped_configmap_parses_to_the_defaults() -> None:
    """The ConfigMap as upstream ships it, _example included, equals the defaults."""
    assert AutoscalerConfig.from_configmap(SHIPPED) == AutoscalerConfig()


def test_values_are_parsed_go_style() -> None:
    """Durations, floats, ints and Go booleans are read as upstream's parsers read them."""
    cfg = AutoscalerConfig.from_configmap(
        {
            "stable-window": "1m30s",
            "scale-to-zero-grace-period": "1500ms",
            "scale-down-delay": "2m",
            "max-scale-up-rate": "1.5e1",
            "enable-scale-to-zero": "F",
            "allow-zero-initial-scale": "TRUE",
            "initial-scale": "0",
            "max-scale": "+8",
        }
    )
    assert (cfg.stable_window, cfg.scale_to_zero_grace_period, cfg.scale_down_delay) == (
        90,
        1.5,
        120,
    )
    assert cfg.max_scale_up_rate == 15
    assert (cfg.enable_scale_to_zero, cfg.allow_zero_initial_scale) == (False, True)
    assert (cfg.initial_scale, cfg.max_scale) == (0, 8)


@pytest.mark.parametrize(("written", "percent"), [("0.5", 50.0), ("1", 100.0), ("80", 80.0)])
def test_target_percentage_also_read_as_a_fraction(written: str, percent: float) -> None:
    """container-concurrency-target-percentage up to 1 is the old fraction spelling."""
    cfg = AutoscalerConfig.from_configmap({"container-concurrency-target-percentage": written})
    assert cfg.container_concurrency_target_percentage == pytest.approx(percent)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("60s", 60.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (".5m", 30.0),
        ("2us", 2e-6),
        ("-5s", -5.0),
        ("+1h0m1s", 3601.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    """Go duration strings become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "60", "s", "1x", " 60s", "60s ", "1m 30s", "1..5s", "-"])
def test_bad_go_durations(text: str) -> None:
    """What Go's time.ParseDuration refuses is refused."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("stable-window", "5s", "between 6s and 3600s"),
        ("stable-window", "1h1s", "between 6s and 3600s"),
        ("stable-window", "6500ms", "whole seconds"),
        ("stable-window", "sixty", "not a duration"),
        ("panic-window-percentage", "0.5", "[1, 100]"),
        ("panic-window-percentage", "101", "[1, 100]"),
        ("max-scale-up-rate", "1", "greater than 1"),
        ("max-scale-down-rate", "1.0", "greater than 1"),
        ("scale-to-zero-grace-period", "0s", "positive"),
        ("scale-down-delay", "-1s", "negative"),
        ("scale-down-delay", "1500ms", "whole seconds"),
        ("scale-to-zero-pod-retention-period", "-1s", "negative"),
        ("target-burst-capacity", "-2", "-1 for unlimited"),
        ("container-concurrency-target-percentage", "0", "(0, 100]"),
        ("container-concurrency-target-percentage", "101", "(0, 100]"),
        ("container-concurrency-target-default", "0.01", "below 0.01"),
        ("requests-per-second-target-default", "0", "at least 0.01"),
        ("activator-capacity", "0.5", "at least 1"),
        ("initial-scale", "0", "allow-zero-initial-scale"),
        ("initial-scale", "-1", "at least 0"),
        ("min-scale", "-1", "at least 0"),
        ("max-scale", "-1", "at least 0"),
        ("max-scale-limit", "-1", "at least 0"),
        ("max-scale", "1.5", "not an integer"),
        ("max-scale", "99999999999", "32-bit"),
        ("enable-scale-to-zero", "yes", "not a boolean"),
        ("max-scale-up-rate", "inf", "not a number"),
        ("max-scale-up-rate", "1_000", "not a number"),
        ("pod-autoscaler-class", "custom.example.com", "must be kpa"),
    ],
)
def test_each_bad_value_is_named(key: str, value: str, fragment: str) -> None:
    """A value upstream would refuse raises AutoscalingError naming the key and value."""
    with pytest.raises(AutoscalingError) as info:
        AutoscalerConfig.from_configmap({key: value})
    assert isinstance(info.value, ValueError) and isinstance(info.value, KnfnError)
    assert any(p.startswith(f"{key}={value!r}") and fragment in p for p in info.value.problems), (
        info.value.problems
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"max-scale-limit": "10"}, "max-scale='0 (default)': must be in [1, "),
        ({"max-scale-limit": "10", "max-scale": "0"}, "max-scale='0': must be in [1, "),
        ({"max-scale-limit": "10", "max-scale": "20"}, "max-scale='20': must be in [1, "),
        ({"min-scale": "5", "max-scale": "3"}, "min-scale='5': must not exceed max-scale=3"),
    ],
)
def test_cross_key_rules(data: dict[str, str], fragment: str) -> None:
    """max-scale against max-scale-limit, and min-scale against max-scale, are checked."""
    with pytest.raises(AutoscalingError) as info:
        AutoscalerConfig.from_configmap(data)
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_every_bad_value_is_reported_at_once() -> None:
    """Several bad keys give one error listing each of them."""
    with pytest.raises(AutoscalingError) as info:
        AutoscalerConfig.from_configmap(
            {"stable-window": "1s", "max-scale-down-rate": "x", "min-scale": "-3"}
        )
    keys = sorted(p.split("=", 1)[0] for p in info.value.problems)
    assert keys == ["max-scale-down-rate", "min-scale", "stable-window"]


def test_max_scale_limit_accepts_max_scale_within_it() -> None:
    """A max-scale within max-scale-limit is accepted."""
    cfg = AutoscalerConfig.from_configmap({"max-scale-limit": "10", "max-scale": "10"})
    assert (cfg.max_scale, cfg.max_scale_limit) == (10, 10)


# ---- local overrides -------------------------------------------------------------------------


def test_local_overrides_go_below_upstream_minimums() -> None:
    """The local-only settings may set a 2 s window, no grace and a 500 ms tick, for demos."""
    overrides = LocalOverrides(
        stable_window=parse_local_override("KNFN_AUTOSCALER_STABLE_WINDOW", "2s"),
        scale_to_zero_grace_period=parse_local_override(
            "KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE", "0s"
        ),
        tick_interval=parse_local_override("KNFN_AUTOSCALER_TICK", "500ms"),
    )
    cfg = with_local_overrides(AutoscalerConfig(), overrides)
    assert (cfg.stable_window, cfg.scale_to_zero_grace_period, cfg.tick_interval) == (2, 0, 0.5)


def test_unset_overrides_change_nothing() -> None:
    """Settings left unset leave the config as it was."""
    cfg = AutoscalerConfig(stable_window=30)
    assert with_local_overrides(cfg, LocalOverrides()) == cfg


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("KNFN_AUTOSCALER_STABLE_WINDOW", "500ms", "at least 1s"),
        ("KNFN_AUTOSCALER_STABLE_WINDOW", "2.5s", "whole seconds"),
        ("KNFN_AUTOSCALER_STABLE_WINDOW", "2h", "at most 1h"),
        ("KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE", "-1s", "at least 0s"),
        ("KNFN_AUTOSCALER_TICK", "0s", "at least 0.001s"),
        ("KNFN_AUTOSCALER_TICK", "2", "not a duration"),
    ],
)
def test_bad_override_says_why(name: str, value: str, why: str) -> None:
    """A bad value raises ValueError saying why (the CLI adds the option and variable)."""
    with pytest.raises(ValueError, match=why):
        parse_local_override(name, value)


def test_annotation_window_beats_the_local_override() -> None:
    """The local override replaces the ConfigMap default, not a revision's own window."""
    cfg = with_local_overrides(AutoscalerConfig(), LocalOverrides(stable_window=2))
    assert resolve_revision_scaling({}, 0, cfg).stable_window == 2
    assert resolve_revision_scaling(ann(window="30s"), 0, cfg).stable_window == 30


# ---- the target per replica ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "cc", "cfg", "target", "total"),
    [
        ({}, 0, AutoscalerConfig(), 70.0, 100.0),  # default 100 x 70 %
        ({}, 10, AutoscalerConfig(), 7.0, 10.0),  # containerConcurrency
        (ann(target="50"), 0, AutoscalerConfig(), 35.0, 50.0),  # annotation
        (ann(target="50"), 10, AutoscalerConfig(), 7.0, 10.0),  # both: CC is smaller
        (ann(target="5"), 10, AutoscalerConfig(), 3.5, 5.0),  # both: annotation smaller
        (ann(target_utilization_percentage="50"), 0, AutoscalerConfig(), 50.0, 100.0),
        (ann(target="10", target_utilization_percentage="100"), 0, AutoscalerConfig(), 10.0, 10.0),
        (ann(target="0.01", target_utilization_percentage="1"), 0, AutoscalerConfig(), 0.01, 0.01),
        (
            {},
            0,
            AutoscalerConfig(
                container_concurrency_target_default=200,
                container_concurrency_target_percentage=50,
            ),
            100.0,
            200.0,
        ),
        (ann(metric="rps"), 0, AutoscalerConfig(), 140.0, 200.0),  # rps default 200 x 70 %
        (ann(metric="rps", target="100"), 10, AutoscalerConfig(), 70.0, 100.0),  # CC not for rps
        (
            ann(metric="rps"),
            0,
            AutoscalerConfig(container_concurrency_target_percentage=50),
            140.0,
            200.0,
        ),  # the ConfigMap percentage is for concurrency only
        (ann(metric="rps", target_utilization_percentage="50"), 0, AutoscalerConfig(), 100, 200),
    ],
)
def test_target_per_replica(
    annotations: dict[str, str], cc: int, cfg: AutoscalerConfig, target: float, total: float
) -> None:
    """Target: annotation, else CC, else default; the smaller of annotation and CC; x util."""
    scaling = resolve_revision_scaling(annotations, cc, cfg)
    assert scaling.target == pytest.approx(target)
    assert scaling.total_target == pytest.approx(total)


# ---- resolving a revision --------------------------------------------------------------------


def test_no_annotations_resolve_to_the_defaults() -> None:
    """A plain revision with CC 0 under the default ConfigMap gets RevisionScaling()."""
    assert resolve_revision_scaling({}, 0, AutoscalerConfig()) == RevisionScaling()


def test_annotations_override_the_configmap() -> None:
    """Each annotation replaces its ConfigMap counterpart; global-only settings stay global."""
    cfg = AutoscalerConfig(scale_to_zero_grace_period=45, enable_scale_to_zero=False)
    scaling = resolve_revision_scaling(
        ann(
            metric="rps",
            min_scale="1",
            max_scale="8",
            initial_scale="3",
            activation_scale="2",
            window="30s",
            panic_window_percentage="20",
            panic_threshold_percentage="150",
            scale_down_delay="1m",
            target_burst_capacity="-1",
            scale_to_zero_pod_retention_period="90s",
        ),
        0,
        cfg,
    )
    assert scaling.metric == "rps"
    assert (scaling.min_scale, scaling.max_scale, scaling.initial_scale) == (1, 8, 3)
    assert scaling.activation_scale == 2
    assert (scaling.stable_window, scaling.panic_window) == (30, 6)
    assert scaling.panic_threshold_percentage == 150
    assert (scaling.scale_down_delay, scaling.scale_to_zero_pod_retention_period) == (60, 90)
    assert scaling.target_burst_capacity == -1
    assert (scaling.scale_to_zero_grace_period, scaling.enable_scale_to_zero) == (45, False)


def test_configmap_scale_bounds_apply_without_annotations() -> None:
    """min-scale, max-scale and initial-scale fall back to the ConfigMap."""
    cfg = AutoscalerConfig(min_scale=1, max_scale=4, initial_scale=2)
    scaling = resolve_revision_scaling({}, 0, cfg)
    assert (scaling.min_scale, scaling.max_scale, scaling.initial_scale) == (1, 4, 2)


@pytest.mark.parametrize(
    ("window", "percentage", "panic"),
    [("60s", "10", 6), ("30s", "10", 3), ("6s", "1", 1), ("25s", "10", 3), ("1h", "100", 3600)],
)
def test_panic_window(window: str, percentage: str, panic: float) -> None:
    """The panic window is the percentage of the stable window, whole seconds, at least 1 s."""
    scaling = resolve_revision_scaling(
        ann(window=window, panic_window_percentage=percentage), 0, AutoscalerConfig()
    )
    assert scaling.panic_window == panic


@pytest.mark.parametrize(
    ("camel", "value", "field", "expected"),
    [
        ("minScale", "2", "min_scale", 2),
        ("maxScale", "7", "max_scale", 7),
        ("initialScale", "3", "initial_scale", 3),
        ("scaleDownDelay", "20s", "scale_down_delay", 20),
        ("targetUtilizationPercentage", "80", "target_utilization_percentage", 80),
        ("targetBurstCapacity", "0", "target_burst_capacity", 0),
        ("panicWindowPercentage", "20", "panic_window_percentage", 20),
        ("panicThresholdPercentage", "300", "panic_threshold_percentage", 300),
        ("scaleToZeroPodRetentionPeriod", "5m", "scale_to_zero_pod_retention_period", 300),
    ],
)
def test_camel_case_spellings_are_read(camel: str, value: str, field: str, expected: float) -> None:
    """The older camelCase annotation names still set their setting."""
    annotations = {f"autoscaling.knative.dev/{camel}": value}
    assert validate_annotations(annotations) == []
    scaling = resolve_revision_scaling(annotations, 0, AutoscalerConfig())
    assert getattr(scaling, field) == expected


def test_camel_case_metric_aggregation_is_accepted() -> None:
    """metricAggregationAlgorithm is a known spelling too."""
    annotations = {
        "autoscaling.knative.dev/class": KPA,
        "autoscaling.knative.dev/metricAggregationAlgorithm": "weightedExponential",
    }
    assert validate_annotations(annotations) == []


def test_initial_scale_zero_needs_the_configmap_switch() -> None:
    """initial-scale 0 is refused unless allow-zero-initial-scale is true."""
    annotations = ann(initial_scale="0")
    assert validate_annotations(annotations)
    cfg = AutoscalerConfig(allow_zero_initial_scale=True)
    assert validate_annotations(annotations, cfg) == []
    assert resolve_revision_scaling(annotations, 0, cfg).initial_scale == 0


# ---- annotation validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations",
    [
        ann(target="10"),
        ann(target="0.01"),
        ann(min_scale="0", max_scale="0"),
        ann(min_scale="2", max_scale="10", activation_scale="3"),
        ann(window="6s"),
        ann(window="1h"),
        ann(target_utilization_percentage="100"),
        ann(panic_window_percentage="1", panic_threshold_percentage="110"),
        ann(panic_threshold_percentage="1000"),
        ann(target_burst_capacity="-1"),
        ann(scale_down_delay="0s"),
        ann(scale_to_zero_pod_retention_period="1500ms"),
        ann(**{"class": HPA, "metric": "cpu"}),
        ann(**{"class": KPA, "metric": "rps", "metric-aggregation-algorithm": "linear"}),
        {"serving.knative.dev/rollout-duration": "60s", "example.com/anything": "x"},
    ],
)
def test_valid_annotations_pass(annotations: dict[str, str]) -> None:
    """Values inside upstream's ranges are accepted; other annotation groups are ignored."""
    assert validate_annotations(annotations) == []


@pytest.mark.parametrize(
    ("annotations", "named", "fragment"),
    [
        (ann(target="0.001"), "target='0.001'", "at least 0.01"),
        (ann(target="ten"), "target='ten'", "not a number"),
        (ann(min_scale="-1"), "min-scale='-1'", "at least 0"),
        (ann(min_scale="1.5"), "min-scale='1.5'", "not an integer"),
        (ann(min_scale="5", max_scale="2"), "max-scale='2'", "less than min-scale=5"),
        (ann(activation_scale="1"), "activation-scale='1'", "at least 2"),
        (ann(min_scale="3", activation_scale="2"), "activation-scale='2'", "min-scale=3"),
        (ann(max_scale="3", activation_scale="4"), "activation-scale='4'", "max-scale=3"),
        (ann(activation_scale="two"), "activation-scale='two'", "not an integer"),
        (ann(window="5s"), "window='5s'", "between 6s and 3600s"),
        (ann(window="2h"), "window='2h'", "between 6s and 3600s"),
        (ann(window="6500ms"), "window='6500ms'", "whole seconds"),
        (ann(window="60"), "window='60'", "not a duration"),
        (ann(scale_down_delay="-1s"), "scale-down-delay='-1s'", "between 0s and 3600s"),
        (ann(scale_down_delay="1.5s"), "scale-down-delay='1.5s'", "whole seconds"),
        (
            ann(scale_to_zero_pod_retention_period="2h"),
            "scale-to-zero-pod-retention-period='2h'",
            "between 0s and 3600s",
        ),
        (
            ann(target_utilization_percentage="0"),
            "target-utilization-percentage='0'",
            "[1, 100]",
        ),
        (
            ann(target_utilization_percentage="101"),
            "target-utilization-percentage='101'",
            "[1, 100]",
        ),
        (ann(panic_window_percentage="0.5"), "panic-window-percentage='0.5'", "[1, 100]"),
        (
            ann(panic_threshold_percentage="100"),
            "panic-threshold-percentage='100'",
            "[110, 1000]",
        ),
        (
            {"autoscaling.knative.dev/panicThresholdPercentage": "1001"},
            "panicThresholdPercentage='1001'",
            "[110, 1000]",
        ),
        (ann(target_burst_capacity="-2"), "target-burst-capacity='-2'", "-1 for unlimited"),
        (ann(initial_scale="0"), "initial-scale='0'", "allow-zero-initial-scale"),
        (ann(initial_scale="-2"), "initial-scale='-2'", "at least 0"),
        (ann(metric="cpu"), "metric='cpu'", "concurrency or rps"),
        (ann(**{"class": "foo.autoscaling.knative.dev"}), "class=", "must be kpa"),
        (ann(**{"class": "custom.example.com"}), "class=", "must be kpa"),
        (ann(**{"class": HPA, "metric": ""}), "metric=''", "must not be empty"),
        (
            ann(**{"class": KPA, "metric-aggregation-algorithm": "max"}),
            "metric-aggregation-algorithm='max'",
            "linear or weighted-exponential",
        ),
    ],
)
def test_each_bad_annotation_is_named(
    annotations: dict[str, str], named: str, fragment: str
) -> None:
    """Each out-of-range, unknown or misplaced annotation is reported with its value."""
    problems = validate_annotations(annotations)
    assert any(named in p and fragment in p for p in problems), problems
    assert all(p.startswith("autoscaling.knative.dev/") for p in problems)


@pytest.mark.parametrize(
    ("annotations", "named", "fragment"),
    [
        (ann(scale_to_zero_grace_period="30s"), "scale-to-zero-grace-period=", "cluster-wide"),
        (ann(enable_scale_to_zero="false"), "enable-scale-to-zero=", "cluster-wide"),
        (ann(minscale="1"), "minscale='1'", "did you mean autoscaling.knative.dev/min-scale?"),
        (ann(min_scale="1") | {"autoscaling.knative.dev/minScale": "2"}, "minScale=", "also set"),
    ],
)
def test_keys_knative_lets_through_are_warned_about_not_refused(
    annotations: dict[str, str], named: str, fragment: str
) -> None:
    """annotation_validation.go reads only the keys it knows: an unknown, global-only or
    doubly spelled key is accepted (and ignored), so knfn warns, naming key and value."""
    assert validate_annotations(annotations) == []
    warnings = annotation_warnings(annotations)
    assert any(named in w and fragment in w and "ignored" in w for w in warnings), warnings


def test_max_scale_limit_bounds_the_annotation() -> None:
    """With max-scale-limit set, max-scale must be set within it, never 0 (unlimited)."""
    cfg = AutoscalerConfig(max_scale=5, max_scale_limit=10)
    assert validate_annotations(ann(max_scale="10"), cfg) == []
    assert any(
        "[1, max-scale-limit=10]" in p for p in validate_annotations(ann(max_scale="11"), cfg)
    )
    assert any("unlimited" in p for p in validate_annotations(ann(max_scale="0"), cfg))


def test_metric_is_checked_against_the_default_class() -> None:
    """Without a class annotation the ConfigMap's class decides which metrics are valid."""
    assert validate_annotations(ann(metric="cpu"))
    assert validate_annotations(ann(metric="cpu"), AutoscalerConfig(pod_autoscaler_class=HPA)) == []


def test_resolve_reports_every_problem_at_once() -> None:
    """resolve_revision_scaling raises one AutoscalingError listing all problems."""
    with pytest.raises(AutoscalingError) as info:
        resolve_revision_scaling(ann(window="1s", target="0"), -1, AutoscalerConfig())
    text = str(info.value)
    for named in ("window='1s'", "target='0'", "containerConcurrency=-1"):
        assert named in text


def test_hpa_class_defaults_to_cpu_and_knfn_scales_it_on_concurrency() -> None:
    """A revision of the HPA class scales on cpu in the cluster unless told otherwise; knfn,
    measuring no CPU, scales it on concurrency and keeps the cluster's metric for display."""
    cfg = AutoscalerConfig()
    scaling = resolve_revision_scaling(ann(**{"class": HPA}), 0, cfg)
    assert (scaling.autoscaler_class, scaling.hpa_metric, scaling.metric) == (
        HPA, "cpu", "concurrency",
    )  # fmt: skip
    memory = resolve_revision_scaling(ann(**{"class": HPA, "metric": "memory"}), 0, cfg)
    assert (memory.hpa_metric, memory.metric) == ("memory", "concurrency")


def test_hpa_class_keeps_one_replica_and_never_scales_to_zero() -> None:
    """hpa/resources/hpa.go: minReplicas below 1 is left to Kubernetes' default of 1, so an
    HPA revision starts with and keeps a replica even at min-scale 0 and initial-scale 0; a
    higher min-scale holds; scale to zero is off; the activator is never in the path."""
    allow_zero = AutoscalerConfig(allow_zero_initial_scale=True)
    at_zero = {"min-scale": "0", "initial-scale": "0"}
    scaling = resolve_revision_scaling(ann(**{"class": HPA, **at_zero}), 0, allow_zero)
    assert (scaling.min_scale, scaling.initial_scale) == (1, 1)
    assert not scaling.enable_scale_to_zero and scaling.target_burst_capacity == 0
    three = resolve_revision_scaling(ann(**{"class": HPA, "min-scale": "3"}), 0, allow_zero)
    assert three.min_scale == 3
    kpa = resolve_revision_scaling(ann(**at_zero), 0, allow_zero)
    assert (kpa.min_scale, kpa.initial_scale, kpa.enable_scale_to_zero) == (0, 0, True)


def test_hpa_target_annotations_are_not_a_concurrency_target() -> None:
    """For an HPA, target is a CPU percentage: knfn's concurrency target ignores it."""
    cfg = AutoscalerConfig()
    hpa = resolve_revision_scaling(ann(**{"class": HPA, "target": "80"}), 10, cfg)
    kpa = resolve_revision_scaling(ann(target="80"), 10, cfg)
    assert hpa.total_target == kpa.total_target == 10.0  # containerConcurrency
    unlimited = resolve_revision_scaling(ann(**{"class": HPA, "target": "80"}), 0, cfg)
    assert unlimited.total_target == 100.0  # container-concurrency-target-default


def test_initial_scale_zero_needs_the_configmap_to_allow_it() -> None:
    """annotation_validation.go validateInitialScale: 0 is refused unless config-autoscaler
    has allow-zero-initial-scale: true; then the revision starts with no replica."""
    zero = ann(initial_scale="0")
    assert any("allow-zero-initial-scale" in p for p in validate_annotations(zero))
    allowed = AutoscalerConfig.from_configmap({"allow-zero-initial-scale": "true"})
    assert validate_annotations(zero, allowed) == []
    assert resolve_revision_scaling(zero, 0, allowed).initial_scale == 0


def test_resolution_is_deterministic_over_spelling() -> None:
    """minScale and min-scale resolve the same revision."""
    cfg = AutoscalerConfig()
    kebab = resolve_revision_scaling(ann(min_scale="2"), 0, cfg)
    camel = resolve_revision_scaling({"autoscaling.knative.dev/minScale": "2"}, 0, cfg)
    assert kebab == camel == replace(RevisionScaling(), min_scale=2)
