"""What a revision's KPA decides from, as ``/status`` shows it (``revisions[].autoscaler``).

Pure: the latest :class:`~knfn.serving.kpa.Decision`, the revision's scaling settings and its
replica counts go in, a JSON-ready dict comes out; knfn/metrics.py exports the same dict under
Knative's autoscaler metric names, so the two always agree. The fields are listed in the module
``FIELDS`` order; ``panic_since`` is wall-clock UTC although the KPA runs on a monotonic clock,
so the caller passes both clocks' readings of "now".

Whether the activator is in the request path follows the KPA reconciler's choice of the
ServerlessService mode (knative/serving ``pkg/reconciler/autoscaling/kpa/kpa.go``): proxy mode
(requests go through the activator) when the revision is scaled to zero or the excess burst
capacity is negative (a target-burst-capacity of -1 makes it -1, so always), serve mode
otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from knfn.serving.autoscaling import RevisionScaling
from knfn.serving.kpa import Decision

FIELDS = (
    "metric", "target", "stable_value", "panic_value", "panic_mode", "panic_since",
    "desired_pods", "ready_pods", "excess_burst_capacity", "activator_in_path",
)  # fmt: skip


def activator_in_path(requested_pods: int, excess_burst_capacity: int) -> bool:
    """kpa.go's SKS mode: proxy when the scale asked for is zero or the EBC is negative."""
    return requested_pods == 0 or excess_burst_capacity < 0


def iso_utc(seconds: float) -> str:
    """Epoch seconds as ``2026-12-02T03:01:02.123Z`` (milliseconds, UTC)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def autoscaler_status(
    scaling: RevisionScaling,
    decision: Decision,
    *,
    ready_pods: int,
    requested_pods: int,
    now: float,
    wall_now: float,
) -> dict[str, Any]:
    """The ``autoscaler`` object of a revision in /status.

    ``now`` is the reading of the clock the decision was made on (``decision.panic_since`` is
    on it), ``wall_now`` the epoch seconds at the same moment; ``requested_pods`` is the scale
    the revision asks for (0 when no route reaches it any more).
    """
    since = decision.panic_since
    return {
        "metric": scaling.metric,
        "target": scaling.target,
        "stable_value": decision.stable_value,
        "panic_value": decision.panic_value,
        "panic_mode": decision.panicking,
        "panic_since": None if since is None else iso_utc(wall_now - (now - since)),
        "desired_pods": decision.desired_pods,
        "ready_pods": ready_pods,
        "excess_burst_capacity": decision.excess_burst_capacity,
        "activator_in_path": activator_in_path(requested_pods, decision.excess_burst_capacity),
    }
