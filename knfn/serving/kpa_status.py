"""What a revision's KPA decides from, as ``/status`` shows it (``revisions[].autoscaler``).

Pure: the latest :class:`~knfn.serving.kpa.Decision`, the revision's scaling settings and its
replica counts go in, a JSON-ready dict comes out; knfn/metrics.py exports the same dict under
Knative's autoscaler metric names, so the two always agree. The fields are listed in the module
``FIELDS`` order; ``panic_since`` is wall-clock UTC although the KPA runs on a monotonic clock,
so the caller passes both clocks' readings of "now".

``activator_in_path`` is what the revision's throttler does with a request arriving now
(knfn/serving/activator.py): the ServerlessService's proxy mode, as the KPA reconciler chooses
it from this decision, or no replica ready.
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


def iso_utc(seconds: float) -> str:
    """Epoch seconds as ``2026-12-02T03:01:02.123Z`` (milliseconds, UTC)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def autoscaler_status(
    scaling: RevisionScaling,
    decision: Decision,
    *,
    ready_pods: int,
    activator_in_path: bool,
    now: float,
    wall_now: float,
) -> dict[str, Any]:
    """The ``autoscaler`` object of a revision in /status.

    ``now`` is the reading of the clock the decision was made on (``decision.panic_since`` is
    on it), ``wall_now`` the epoch seconds at the same moment; ``activator_in_path`` whether
    requests go through the activator now.
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
        "activator_in_path": activator_in_path,
    }
