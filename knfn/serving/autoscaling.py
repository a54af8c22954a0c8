"""How one revision scales: its ``autoscaling.knative.dev/*`` annotations over the ConfigMap.

:class:`RevisionScaling` is what one revision scales by: the annotations of its template, its
``containerConcurrency`` and the ``config-autoscaler`` ConfigMap (autoscaler_config.py),
resolved as upstream's PodAutoscaler and Decider do (``pkg/apis/autoscaling/register.go``,
``annotation_validation.go``, ``v1alpha1/pa_lifecycle.go``,
``pkg/reconciler/autoscaling/resources/target.go`` and ``metric.go``,
``pkg/reconciler/autoscaling/kpa/resources/decider.go``). Every bad annotation is reported at
once, naming the annotation and its value as written.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from knfn.serving.autoscaler_config import (
    BUCKET_SIZE,
    CONCURRENCY,
    CPU,
    GROUP,
    HPA,
    KPA,
    PANIC_THRESHOLD_PERCENTAGE_RANGE,
    PANIC_WINDOW_PERCENTAGE_RANGE,
    RPS,
    RPS_TARGET_UTILIZATION_PERCENTAGE,
    TARGET_MIN,
    TICK_INTERVAL,
    WINDOW_MAX,
    WINDOW_MIN,
    AutoscalerConfig,
    AutoscalingError,
    duration_nanos,
    parse_duration,
    parse_float,
    parse_int32,
    seconds_text,
)

# Current kebab-case name -> the older camelCase spelling still read, if any (register.go,
# the kmap.KeyPriority lists: the kebab-case name is looked up first).
ANNOTATION_KEYS: Mapping[str, str | None] = {
    "class": None,
    "metric": None,
    "target": None,
    "window": None,
    "activation-scale": None,
    "min-scale": "minScale",
    "max-scale": "maxScale",
    "initial-scale": "initialScale",
    "scale-down-delay": "scaleDownDelay",
    "target-utilization-percentage": "targetUtilizationPercentage",
    "target-burst-capacity": "targetBurstCapacity",
    "panic-window-percentage": "panicWindowPercentage",
    "panic-threshold-percentage": "panicThresholdPercentage",
    "scale-to-zero-pod-retention-period": "scaleToZeroPodRetentionPeriod",
    "metric-aggregation-algorithm": "metricAggregationAlgorithm",
}
# ConfigMap keys people also try as annotations; they are cluster-wide only.
GLOBAL_ONLY_KEYS = frozenset({"scale-to-zero-grace-period", "enable-scale-to-zero"})
# For an HPA these are the CPU percentage or memory it aims at: not a concurrency target.
HPA_UNREAD = frozenset({"target", "target-utilization-percentage"})
AGGREGATION_ALGORITHMS = frozenset({"linear", "weighted-exponential", "weightedExponential"})


@dataclass(frozen=True)
class RevisionScaling:
    """How one revision scales: its annotations and containerConcurrency over the ConfigMap.

    The defaults are what a revision with no annotations and ``containerConcurrency: 0`` gets
    from the default ConfigMap. ``target`` is per replica (upstream's TargetValue);
    ``total_target`` is what one replica may carry before the utilization factor (TotalValue,
    used for burst capacity). ``activation_scale`` of 1 means "not set".
    """

    autoscaler_class: str = KPA
    metric: str = CONCURRENCY
    hpa_metric: str | None = None  # HPA class: the cluster's metric; knfn scales on `metric`
    container_concurrency: int = 0
    target: float = 70.0
    total_target: float = 100.0
    target_utilization_percentage: float = 70.0
    target_burst_capacity: float = 211.0
    min_scale: int = 0
    max_scale: int = 0
    initial_scale: int = 1
    activation_scale: int = 1
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    scale_down_delay: float = 0.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_to_zero_grace_period: float = 30.0
    enable_scale_to_zero: bool = True
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    activator_capacity: float = 100.0
    tick_interval: float = TICK_INTERVAL

    @property
    def panic_window(self) -> float:
        """Seconds: the panic percentage of the stable window, whole seconds, at least one
        bucket (pkg/reconciler/autoscaling/resources/metric.go MakeMetric)."""
        exact = self.stable_window * self.panic_window_percentage / 100.0
        return max(BUCKET_SIZE, math.floor(exact + 0.5))


def _read_annotations(
    annotations: Mapping[str, str],
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """The autoscaling annotations by kebab-case name -> (key as written, value), and
    warnings about the keys themselves (unknown, global-only, set in both spellings).

    Upstream's webhook validates the keys it knows and lets every other key of the domain
    through unread (annotation_validation.go), so these are warnings, not refusals: the
    manifest is valid for a cluster, which ignores the key."""
    found: dict[str, tuple[str, str]] = {}
    warnings: list[str] = []
    old_to_new = {old: new for new, old in ANNOTATION_KEYS.items() if old}
    known = sorted({*ANNOTATION_KEYS, *old_to_new})
    # Kebab-case first, so that a clash is reported against the camelCase spelling.
    for key in sorted(annotations, key=lambda k: k.split("/", 1)[-1] in old_to_new):
        if not key.startswith(GROUP + "/"):
            continue
        value = annotations[key]
        name = key.split("/", 1)[1]
        if name in GLOBAL_ONLY_KEYS:
            warnings.append(
                f"{key}={value!r}: ignored; only settable cluster-wide, in config-autoscaler"
            )
            continue
        canonical = name if name in ANNOTATION_KEYS else old_to_new.get(name)
        if canonical is None:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {GROUP}/{close[0]}?" if close else ""
            warnings.append(f"{key}={value!r}: unknown autoscaling annotation, ignored{hint}")
        elif canonical in found:
            # Upstream reads the kebab-case one (kmap.KeyPriority); two values for one
            # setting is a mistake worth hearing about.
            warnings.append(
                f"{key}={value!r}: ignored, {found[canonical][0]} is also set; keep one"
            )
        else:
            found[canonical] = (key, value)
    return found, warnings


def annotation_warnings(annotations: Mapping[str, str]) -> list[str]:
    """What Knative accepts and ignores among a template's autoscaling annotations: keys it
    does not know, global-only keys, a setting in both spellings (see _read_annotations)."""
    return _read_annotations(annotations)[1]


def validate_annotations(
    annotations: Mapping[str, str], cfg: AutoscalerConfig | None = None
) -> list[str]:
    """Every problem with a revision template's ``autoscaling.knative.dev/*`` annotations, each
    naming the annotation and its value (annotation_validation.go ValidateAnnotations, with
    the differences noted inline). Other annotations, and keys of the domain it does not
    know, are let through (:func:`annotation_warnings` lists those). ``cfg`` supplies the
    ConfigMap settings some checks depend on (max-scale-limit, allow-zero-initial-scale, the
    default class); the defaults when omitted."""
    cfg = cfg or AutoscalerConfig()
    found, _ = _read_annotations(annotations)
    problems: list[str] = []

    def bad(name: str, message: str) -> None:
        key, value = found[name]
        problems.append(f"{key}={value!r}: {message}")

    def number(name: str) -> float | None:
        try:
            return parse_float(found[name][1])
        except ValueError:
            bad(name, "not a number")
            return None

    def duration(name: str) -> int | None:
        try:
            return duration_nanos(found[name][1])
        except ValueError as err:
            bad(name, str(err))
            return None

    def integer(name: str) -> int | None:
        try:
            return parse_int32(found[name][1])
        except ValueError as err:
            bad(name, str(err))
            return None

    klass = found["class"][1] if "class" in found else cfg.pod_autoscaler_class
    if "class" in found and klass not in (KPA, HPA):
        # Upstream lets classes outside knative.dev through for custom autoscalers; knfn has
        # none to hand them to.
        bad("class", f"must be {KPA} or {HPA}")
    if "metric" in found:
        metric = found["metric"][1]
        if klass == KPA and metric not in (CONCURRENCY, RPS):
            bad("metric", f"the KPA scales on {CONCURRENCY} or {RPS}")
        elif klass == HPA and not metric:
            bad("metric", "must not be empty")
    # Only checked for an explicit KPA class: custom autoscalers may define their own values.
    algorithm = found.get("metric-aggregation-algorithm", ("", ""))[1]
    explicit_kpa = found.get("class", ("", ""))[1] == KPA
    if explicit_kpa and algorithm and algorithm not in AGGREGATION_ALGORITHMS:
        bad("metric-aggregation-algorithm", "must be linear or weighted-exponential")

    if "target" in found and (value := number("target")) is not None and value < TARGET_MIN:
        bad("target", f"must be at least {TARGET_MIN}")
    for name, (low, high) in (
        ("target-utilization-percentage", (1.0, 100.0)),
        ("panic-window-percentage", PANIC_WINDOW_PERCENTAGE_RANGE),
        ("panic-threshold-percentage", PANIC_THRESHOLD_PERCENTAGE_RANGE),
    ):
        if name in found and (value := number(name)) is not None and not low <= value <= high:
            bad(name, f"must be in [{low:g}, {high:g}]")
    if "target-burst-capacity" in found:
        value = number("target-burst-capacity")
        if value is not None and value < 0 and value != -1:
            bad("target-burst-capacity", "must be >= 0, or -1 for unlimited")

    window_max = int(WINDOW_MAX * 1e9)
    for name, low_ns, whole in (
        ("window", int(WINDOW_MIN * 1e9), True),
        ("scale-down-delay", 0, True),
        ("scale-to-zero-pod-retention-period", 0, False),
    ):
        if name in found and (nanos := duration(name)) is not None:
            if not low_ns <= nanos <= window_max:
                bad(
                    name,
                    f"must be between {seconds_text(low_ns / 1e9)} and {seconds_text(WINDOW_MAX)}",
                )
            elif whole and nanos % 10**9:
                bad(name, "must be whole seconds")

    scales = {
        name: value
        for name in ("min-scale", "max-scale")
        if name in found and (value := integer(name)) is not None
    }
    for name, value in scales.items():
        if value < 0:
            bad(name, "must be at least 0")
    low_scale, high_scale = max(scales.get("min-scale", 0), 0), scales.get("max-scale", 0)
    if high_scale > 0 and high_scale < low_scale:
        bad("max-scale", f"is less than min-scale={low_scale}")
    if "max-scale" in scales and cfg.max_scale_limit > 0:
        if high_scale == 0:
            bad("max-scale", f"0 (unlimited) is above max-scale-limit={cfg.max_scale_limit}")
        elif high_scale > cfg.max_scale_limit:
            bad("max-scale", f"must be in [1, max-scale-limit={cfg.max_scale_limit}]")
    if "activation-scale" in found and (activation := integer("activation-scale")) is not None:
        if activation < 2:
            bad("activation-scale", "must be at least 2")
        elif activation < low_scale:
            bad("activation-scale", f"is less than min-scale={low_scale}")
        elif high_scale > 0 and activation > high_scale:
            bad("activation-scale", f"is more than max-scale={high_scale}")
    if "initial-scale" in found and (initial := integer("initial-scale")) is not None:
        if initial < 0:
            bad("initial-scale", "must be at least 0")
        elif initial == 0 and not cfg.allow_zero_initial_scale:
            bad("initial-scale", "0 needs allow-zero-initial-scale: true in config-autoscaler")
    return problems


def default_metric(autoscaler_class: str) -> str:
    """The metric a class scales on when none is set (v1alpha1/pa_defaults.go)."""
    return CPU if autoscaler_class == HPA else CONCURRENCY


def resolve_revision_scaling(
    annotations: Mapping[str, str], container_concurrency: int, cfg: AutoscalerConfig
) -> RevisionScaling:
    """What a revision scales by; raises :class:`AutoscalingError` listing every problem.

    The target (resources/target.go ResolveMetricTarget): the total per replica is the
    ``target`` annotation, else ``containerConcurrency`` if non-zero, else the ConfigMap default
    (``container-concurrency-target-default``, or ``requests-per-second-target-default`` for
    metric ``rps``); with metric ``concurrency`` and both the annotation and
    ``containerConcurrency`` set, the smaller. The target per replica is
    ``max(0.01, total * utilization / 100)``, utilization being the
    ``target-utilization-percentage`` annotation, else the ConfigMap percentage for
    concurrency and 70 for other metrics.

    The HPA class (``hpa.autoscaling.knative.dev``) hands a revision to a Kubernetes
    HorizontalPodAutoscaler (pkg/reconciler/autoscaling/hpa/resources/hpa.go): at least one
    replica (an HPA's minReplicas defaults to 1), never zero, and the activator never in the
    path (hpa.go keeps the ServerlessService in serve mode). That much is modelled here. The
    metric is not: knfn measures no CPU or memory, so an HPA revision scales on concurrency
    with the KPA's algorithm and the concurrency target (containerConcurrency, else the
    ConfigMap default); the ``target`` and ``target-utilization-percentage`` annotations,
    which are a CPU percentage or memory for an HPA, are not read, and the cluster's metric is
    kept in ``hpa_metric`` for display.
    """
    problems = validate_annotations(annotations, cfg)
    if container_concurrency < 0:
        problems.append(f"containerConcurrency={container_concurrency}: must be at least 0")
    if problems:
        raise AutoscalingError(problems)
    found, _ = _read_annotations(annotations)

    def text(name: str, default: str) -> str:
        return found[name][1] if name in found else default

    def number(name: str, default: float) -> float:
        return parse_float(found[name][1]) if name in found else default

    def integer(name: str, default: int) -> int:
        return parse_int32(found[name][1]) if name in found else default

    def seconds(name: str, default: float) -> float:
        return parse_duration(found[name][1]) if name in found else default

    klass = text("class", cfg.pod_autoscaler_class)
    metric = text("metric", default_metric(klass))
    hpa = klass == HPA
    hpa_metric = metric if hpa else None
    if hpa:
        metric = CONCURRENCY  # what knfn measures in place of cpu or memory (docstring)
        found = {k: v for k, v in found.items() if k not in HPA_UNREAD}
    if metric == RPS:
        total = cfg.requests_per_second_target_default
        utilization = RPS_TARGET_UTILIZATION_PERCENTAGE
    else:
        total = float(container_concurrency) or cfg.container_concurrency_target_default
        utilization = cfg.container_concurrency_target_percentage
    if "target" in found:
        total = number("target", total)
        if metric == CONCURRENCY and container_concurrency:
            # Never aim above what one replica admits.
            total = min(total, float(container_concurrency))
    utilization = number("target-utilization-percentage", utilization)

    initial = integer("initial-scale", cfg.initial_scale)
    if initial == 0 and not cfg.allow_zero_initial_scale:
        initial = cfg.initial_scale  # kpa/resources/decider.go GetInitialScale
    min_scale = integer("min-scale", cfg.min_scale)
    burst = number("target-burst-capacity", cfg.target_burst_capacity)
    if hpa:
        # hpa/resources/hpa.go: minReplicas unset below 1, so Kubernetes' default of 1.
        min_scale, initial, burst = max(1, min_scale), max(1, initial), 0.0
    return RevisionScaling(
        autoscaler_class=klass,
        metric=metric,
        hpa_metric=hpa_metric,
        container_concurrency=container_concurrency,
        target=max(TARGET_MIN, total * utilization / 100.0),
        total_target=total,
        target_utilization_percentage=utilization,
        target_burst_capacity=burst,
        min_scale=min_scale,
        max_scale=integer("max-scale", cfg.max_scale),
        initial_scale=initial,
        activation_scale=integer("activation-scale", 1),
        stable_window=seconds("window", cfg.stable_window),
        panic_window_percentage=number("panic-window-percentage", cfg.panic_window_percentage),
        panic_threshold_percentage=number(
            "panic-threshold-percentage", cfg.panic_threshold_percentage
        ),
        scale_down_delay=seconds("scale-down-delay", cfg.scale_down_delay),
        scale_to_zero_pod_retention_period=seconds(
            "scale-to-zero-pod-retention-period", cfg.scale_to_zero_pod_retention_period
        ),
        scale_to_zero_grace_period=cfg.scale_to_zero_grace_period,
        enable_scale_to_zero=cfg.enable_scale_to_zero and not hpa,
        max_scale_up_rate=cfg.max_scale_up_rate,
        max_scale_down_rate=cfg.max_scale_down_rate,
        activator_capacity=cfg.activator_capacity,
        tick_interval=cfg.tick_interval,
    )
