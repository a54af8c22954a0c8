"""The ``config-autoscaler`` ConfigMap: every key with its upstream default, parsed and checked.

Parsed and validated the way upstream does it (knative/serving
``pkg/autoscaler/config/config.go``; the keys are listed in
``config/core/configmaps/autoscaler.yaml``), with the constants of
``pkg/apis/autoscaling/register.go`` that both the ConfigMap and a revision's annotations
(autoscaling.py) are checked against, and Go's syntax for the values.

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


def duration_nanos(text: str) -> int:
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
    return duration_nanos(text) / 1e9


def parse_float(text: str) -> float:
    # Decimal notation only: Go would also take hex, Inf and NaN, none of which is a sane
    # autoscaling setting; Python's float() would take "1_000" and spaces, which Go refuses.
    if not _FLOAT.fullmatch(text):
        raise ValueError("not a number")
    return float(text)


def parse_int32(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError("not an integer")
    number = int(text)
    if not -INT32_MAX - 1 <= number <= INT32_MAX:
        raise ValueError("out of the 32-bit integer range")
    return number


def parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool, which knative.dev/pkg/configmap AsBool uses.
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean (true or false)")


def seconds_text(value: float) -> str:
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
    "enable-scale-to-zero": parse_bool,
    "allow-zero-initial-scale": parse_bool,
    "max-scale-up-rate": parse_float,
    "max-scale-down-rate": parse_float,
    "container-concurrency-target-percentage": parse_float,
    "container-concurrency-target-default": parse_float,
    "requests-per-second-target-default": parse_float,
    "target-burst-capacity": parse_float,
    "panic-window-percentage": parse_float,
    "panic-threshold-percentage": parse_float,
    "activator-capacity": parse_float,
    "initial-scale": parse_int32,
    "min-scale": parse_int32,
    "max-scale": parse_int32,
    "max-scale-limit": parse_int32,
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
        bad(
            "stable-window",
            f"must be between {seconds_text(WINDOW_MIN)} and {seconds_text(WINDOW_MAX)}",
        )
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
        raise ValueError(f"must be at least {seconds_text(least)}")
    if field_name == "stable_window" and not (seconds.is_integer() and seconds <= WINDOW_MAX):
        raise ValueError("must be whole seconds, at most 1h")
    return seconds


def with_local_overrides(cfg: AutoscalerConfig, overrides: LocalOverrides) -> AutoscalerConfig:
    """``cfg`` with the local-only settings that are set applied (module docstring)."""
    values = {k: v for k, v in vars(overrides).items() if v is not None}
    return replace(cfg, **values)
