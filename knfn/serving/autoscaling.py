"""Autoscaling settings: the ``config-autoscaler`` ConfigMap and a revision's annotations.

Two layers, as in Knative Serving:

* :class:`AutoscalerConfig` is the cluster-wide ``config-autoscaler`` ConfigMap, every key with
  its upstream default, parsed and validated the way upstream does it
  (knative/serving ``pkg/autoscaler/config/config.go``; the keys are listed in
  ``config/core/configmaps/autoscaler.yaml``).
* :class:`RevisionScaling` is what one revision scales by: the ``autoscaling.knative.dev/*``
  annotations of its template, its ``containerConcurrency`` and the ConfigMap, resolved as
  upstream's PodAutoscaler and Decider do (``pkg/apis/autoscaling/register.go``,
  ``annotation_validation.go``, ``v1alpha1/pa_lifecycle.go``,
  ``pkg/reconciler/autoscaling/resources/target.go`` and ``metric.go``,
  ``pkg/reconciler/autoscaling/kpa/resources/decider.go``).

Durations are written as Go writes them (``"60s"``, ``"1m30s"``, ``"500ms"``) and held here as
seconds (``float``). Every bad value is reported at once by :class:`AutoscalingError`, naming the
key (or annotation, or variable) and the value as written.

Local-only overrides
--------------------
Upstream's limits suit a cluster: a stable window of at least 6 s, a 2 s tick, a scale-to-zero
grace period above zero. Watching a revision scale down to zero on a laptop then takes a minute
and a half. :func:`with_local_overrides` lets ``knfn dev`` (and tests) shorten that, from these
options of ``knfn dev`` (knfn/cli.py), each with its environment variable:

``--autoscaler-stable-window`` / ``KNFN_AUTOSCALER_STABLE_WINDOW``
    default stable window (e.g. ``2s``); may go below upstream's 6 s, down to one 1 s bucket.
``--autoscaler-scale-to-zero-grace`` / ``KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE``
    scale-to-zero grace period (e.g. ``0s``); may be zero.
``--autoscaler-tick`` / ``KNFN_AUTOSCALER_TICK``
    how often the autoscaler decides (default ``2s``, upstream's fixed tick; e.g. ``500ms``).

They replace ConfigMap values only, so a revision's own ``autoscaling.knative.dev/window``
annotation still wins, and annotations are still checked against upstream's ranges: the
manifests stay valid for a real cluster. Nothing here exists upstream; it never leaves this
machine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from knfn.errors import KnfnError

GROUP = "autoscaling.knative.dev"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
CONCURRENCY = "concurrency"
RPS = "rps"
CPU = "cpu"

TARGET_MIN = 0.01  # register.go TargetMin
WINDOW_MIN = 6.0  # register.go WindowMin
WINDOW_MAX = 3600.0  # register.go WindowMax
PANIC_WINDOW_PERCENTAGE_RANGE = (1.0, 100.0)  # register.go PanicWindowPercentageMin/Max
PANIC_THRESHOLD_PERCENTAGE_RANGE = (110.0, 1000.0)  # register.go PanicThresholdPercentageMin/Max
BUCKET_SIZE = 1.0  # config.go BucketSize: metrics are kept in 1 s buckets
TICK_INTERVAL = 2.0  # scaling/multiscaler.go tickInterval
# config.go defaultTargetUtilization: the utilization for metrics other than concurrency. It is
# not a ConfigMap key upstream, so container-concurrency-target-percentage does not touch rps.
RPS_TARGET_UTILIZATION_PERCENTAGE = 70.0
INT32_MAX = 2**31 - 1

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
AGGREGATION_ALGORITHMS = frozenset({"linear", "weighted-exponential", "weightedExponential"})


class AutoscalingError(KnfnError, ValueError):
    """One or more autoscaling settings with bad values; each problem names key and value."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


# ---- Go value syntax ----------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NANOS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,  # Go accepts both micro signs
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def _duration_nanos(text: str) -> int:
    """Nanoseconds in a Go duration (Go's time.ParseDuration syntax)."""
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if body == "0":
        return 0
    total, pos = Fraction(0), 0
    for part in _DURATION_PART.finditer(body):
        if part.start() != pos:
            break
        total += Fraction(part.group(1)) * _UNIT_NANOS[part.group(2)]
        pos = part.end()
    if not body or pos != len(body):
        raise ValueError("not a duration (write it as 60s, 1m30s or 500ms)")
    return sign * int(total)


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"60s"``, ``"1m30s"``, ``"500ms"`` or ``"0"``."""
    return _duration_nanos(text) / 1e9


def _parse_float(text: str) -> float:
    # Decimal notation only: Go would also take hex, Inf and NaN, none of which is a sane
    # autoscaling setting; Python's float() would take "1_000" and spaces, which Go refuses.
    if not _FLOAT.fullmatch(text):
        raise ValueError("not a number")
    return float(text)


def _parse_int32(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError("not an integer")
    number = int(text)
    if not -INT32_MAX - 1 <= number <= INT32_MAX:
        raise ValueError("out of the 32-bit integer range")
    return number


def _parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool, which knative.dev/pkg/configmap AsBool uses.
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean (true or false)")


def _seconds(value: float) -> str:
    """A duration for messages: 90.0 -> '90s'."""
    return f"{value:g}s"


# ---- config-autoscaler ---------------------------------------------------------------------


@dataclass(frozen=True)
class AutoscalerConfig:
    """The ``config-autoscaler`` ConfigMap; durations in seconds, percentages as percent.

    Field names are the ConfigMap keys with ``_`` for ``-``. ``tick_interval`` is not a key:
    upstream fixes it at 2 s; here only :func:`with_local_overrides` changes it.
    """

    container_concurrency_target_percentage: float = 70.0
    container_concurrency_target_default: float = 100.0
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    pod_autoscaler_class: str = KPA
    activator_capacity: float = 100.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0
    tick_interval: float = TICK_INTERVAL

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AutoscalerConfig:
        """Parse and validate ConfigMap data; keys it does not know (``_example``) are ignored,
        as upstream ignores them. Raises :class:`AutoscalingError` listing every bad value."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        for key, raw in data.items():
            parse = _CONFIGMAP_PARSERS.get(key)
            if parse is None:
                continue
            try:
                values[key.replace("-", "_")] = parse(raw)
            except ValueError as err:
                problems.append(f"{key}={raw!r}: {err}")
        percentage = values.get("container_concurrency_target_percentage")
        if percentage is not None and percentage <= 1.0:
            # Upstream still reads the old spelling as a fraction in (0, 1].
            values["container_concurrency_target_percentage"] = percentage * 100.0
        cfg = replace(cls(), **values)
        problems.extend(_validate_config(cfg, data))
        if problems:
            raise AutoscalingError(problems)
        return cfg


_CONFIGMAP_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "pod-autoscaler-class": str,
    "enable-scale-to-zero": _parse_bool,
    "allow-zero-initial-scale": _parse_bool,
    "max-scale-up-rate": _parse_float,
    "max-scale-down-rate": _parse_float,
    "container-concurrency-target-percentage": _parse_float,
    "container-concurrency-target-default": _parse_float,
    "requests-per-second-target-default": _parse_float,
    "target-burst-capacity": _parse_float,
    "panic-window-percentage": _parse_float,
    "panic-threshold-percentage": _parse_float,
    "activator-capacity": _parse_float,
    "initial-scale": _parse_int32,
    "min-scale": _parse_int32,
    "max-scale": _parse_int32,
    "max-scale-limit": _parse_int32,
    "stable-window": parse_duration,
    "scale-down-delay": parse_duration,
    "scale-to-zero-grace-period": parse_duration,
    "scale-to-zero-pod-retention-period": parse_duration,
}


def _validate_config(cfg: AutoscalerConfig, data: Mapping[str, str]) -> list[str]:
    """The ranges config.go's validate() enforces, each problem naming key and value."""
    problems: list[str] = []

    def bad(key: str, message: str) -> None:
        shown = data.get(key, f"{getattr(cfg, key.replace('-', '_'))} (default)")
        problems.append(f"{key}={shown!r}: {message}")

    if cfg.scale_to_zero_grace_period <= 0:
        bad("scale-to-zero-grace-period", "must be positive")
    if cfg.scale_down_delay < 0:
        bad("scale-down-delay", "must not be negative")
    elif not cfg.scale_down_delay.is_integer():
        bad("scale-down-delay", "must be whole seconds")
    if cfg.scale_to_zero_pod_retention_period < 0:
        bad("scale-to-zero-pod-retention-period", "must not be negative")
    if cfg.target_burst_capacity < 0 and cfg.target_burst_capacity != -1:
        bad("target-burst-capacity", "must be >= 0, or -1 for unlimited")
    percentage = cfg.container_concurrency_target_percentage
    if not 0 < percentage <= 100:
        bad("container-concurrency-target-percentage", "must be in (0, 100]")
    elif percentage / 100 * cfg.container_concurrency_target_default < TARGET_MIN:
        bad(
            "container-concurrency-target-default",
            f"with container-concurrency-target-percentage {percentage:g} the target is below "
            f"{TARGET_MIN}",
        )
    if cfg.requests_per_second_target_default < TARGET_MIN:
        bad("requests-per-second-target-default", f"must be at least {TARGET_MIN}")
    if cfg.activator_capacity < 1:
        bad("activator-capacity", "must be at least 1")
    if cfg.max_scale_up_rate <= 1:
        bad("max-scale-up-rate", "must be greater than 1")
    if cfg.max_scale_down_rate <= 1:
        bad("max-scale-down-rate", "must be greater than 1")
    if not WINDOW_MIN <= cfg.stable_window <= WINDOW_MAX:
        bad("stable-window", f"must be between {_seconds(WINDOW_MIN)} and {_seconds(WINDOW_MAX)}")
    elif not cfg.stable_window.is_integer():
        bad("stable-window", "must be whole seconds")
    low, high = PANIC_WINDOW_PERCENTAGE_RANGE
    if not low <= cfg.panic_window_percentage <= high:
        bad("panic-window-percentage", f"must be in [{low:g}, {high:g}]")
    if cfg.initial_scale < 0:
        bad("initial-scale", "must be at least 0")
    elif cfg.initial_scale == 0 and not cfg.allow_zero_initial_scale:
        bad("initial-scale", "0 needs allow-zero-initial-scale: true")
    if cfg.min_scale < 0:
        bad("min-scale", "must be at least 0")
    if cfg.max_scale_limit < 0:
        bad("max-scale-limit", "must be at least 0")
    elif cfg.max_scale_limit > 0 and not 1 <= cfg.max_scale <= cfg.max_scale_limit:
        bad("max-scale", f"must be in [1, max-scale-limit={cfg.max_scale_limit}]")
    elif cfg.max_scale < 0:
        bad("max-scale", "must be at least 0")
    if cfg.max_scale > 0 and cfg.min_scale > cfg.max_scale:
        bad("min-scale", f"must not exceed max-scale={cfg.max_scale}")
    # Upstream accepts any class name here; knfn runs no autoscaler but its own.
    if cfg.pod_autoscaler_class not in (KPA, HPA):
        bad("pod-autoscaler-class", f"must be {KPA} or {HPA}")
    return problems


# Variable -> (LocalOverrides field, smallest value allowed). See the module docstring.
LOCAL_OVERRIDES: Mapping[str, tuple[str, float]] = {
    "KNFN_AUTOSCALER_STABLE_WINDOW": ("stable_window", BUCKET_SIZE),
    "KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE": ("scale_to_zero_grace_period", 0.0),
    "KNFN_AUTOSCALER_TICK": ("tick_interval", 0.001),
}


@dataclass(frozen=True)
class LocalOverrides:
    """The local-only settings (module docstring), in seconds; None leaves the ConfigMap's."""

    stable_window: float | None = None
    scale_to_zero_grace_period: float | None = None
    tick_interval: float | None = None


def parse_local_override(name: str, raw: str) -> float:
    """Seconds for the local-only variable ``name`` (a :data:`LOCAL_OVERRIDES` key).

    Raises :class:`ValueError` saying what is wrong with ``raw``; the caller names the variable.
    """
    field_name, least = LOCAL_OVERRIDES[name]
    seconds = parse_duration(raw)
    if seconds < least:
        raise ValueError(f"must be at least {_seconds(least)}")
    if field_name == "stable_window" and not (seconds.is_integer() and seconds <= WINDOW_MAX):
        raise ValueError("must be whole seconds, at most 1h")
    return seconds


def with_local_overrides(cfg: AutoscalerConfig, overrides: LocalOverrides) -> AutoscalerConfig:
    """``cfg`` with the local-only settings that are set applied (module docstring)."""
    values = {k: v for k, v in vars(overrides).items() if v is not None}
    return replace(cfg, **values)


# ---- one revision --------------------------------------------------------------------------


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
    """The autoscaling annotations by kebab-case name -> (key as written, value), and the
    problems with the keys themselves (unknown, global-only, set in both spellings)."""
    found: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    old_to_new = {old: new for new, old in ANNOTATION_KEYS.items() if old}
    # Kebab-case first, so that a clash is reported against the camelCase spelling.
    for key in sorted(annotations, key=lambda k: k.split("/", 1)[-1] in old_to_new):
        if not key.startswith(GROUP + "/"):
            continue
        value = annotations[key]
        name = key.split("/", 1)[1]
        if name in GLOBAL_ONLY_KEYS:
            problems.append(f"{key}={value!r}: only settable cluster-wide, in config-autoscaler")
            continue
        canonical = name if name in ANNOTATION_KEYS else old_to_new.get(name)
        if canonical is None:
            problems.append(f"{key}={value!r}: unknown autoscaling annotation")
        elif canonical in found:
            # Upstream silently reads the kebab-case one; two values for one setting is a
            # mistake worth hearing about.
            problems.append(f"{key}={value!r}: {found[canonical][0]} is also set; keep one")
        else:
            found[canonical] = (key, value)
    return found, problems


def validate_annotations(
    annotations: Mapping[str, str], cfg: AutoscalerConfig | None = None
) -> list[str]:
    """Every problem with a revision template's ``autoscaling.knative.dev/*`` annotations, each
    naming the annotation and its value (annotation_validation.go ValidateAnnotations, with
    the differences noted inline). Other annotations are ignored. ``cfg`` supplies the
    ConfigMap settings some checks depend on (max-scale-limit, allow-zero-initial-scale, the
    default class); the defaults when omitted."""
    cfg = cfg or AutoscalerConfig()
    found, problems = _read_annotations(annotations)

    def bad(name: str, message: str) -> None:
        key, value = found[name]
        problems.append(f"{key}={value!r}: {message}")

    def number(name: str) -> float | None:
        try:
            return _parse_float(found[name][1])
        except ValueError:
            bad(name, "not a number")
            return None

    def duration(name: str) -> int | None:
        try:
            return _duration_nanos(found[name][1])
        except ValueError as err:
            bad(name, str(err))
            return None

    def integer(name: str) -> int | None:
        try:
            return _parse_int32(found[name][1])
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
                bad(name, f"must be between {_seconds(low_ns / 1e9)} and {_seconds(WINDOW_MAX)}")
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
        return _parse_float(found[name][1]) if name in found else default

    def integer(name: str, default: int) -> int:
        return _parse_int32(found[name][1]) if name in found else default

    def seconds(name: str, default: float) -> float:
        return parse_duration(found[name][1]) if name in found else default

    klass = text("class", cfg.pod_autoscaler_class)
    metric = text("metric", default_metric(klass))
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
    return RevisionScaling(
        autoscaler_class=klass,
        metric=metric,
        container_concurrency=container_concurrency,
        target=max(TARGET_MIN, total * utilization / 100.0),
        total_target=total,
        target_utilization_percentage=utilization,
        target_burst_capacity=number("target-burst-capacity", cfg.target_burst_capacity),
        min_scale=integer("min-scale", cfg.min_scale),
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
        enable_scale_to_zero=cfg.enable_scale_to_zero,
        max_scale_up_rate=cfg.max_scale_up_rate,
        max_scale_down_rate=cfg.max_scale_down_rate,
        activator_capacity=cfg.activator_capacity,
        tick_interval=cfg.tick_interval,
    )
