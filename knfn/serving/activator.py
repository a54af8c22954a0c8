"""The activator in a revision's request path: when Knative puts it there, and what it holds.

Knative sends a revision's requests either straight to its pods, whose queue-proxy admits
``containerConcurrency`` at once and queues 10 x CC more before answering 503
(knfn/serving/throttler.py), or through the activator, which holds them in a per-revision queue
and forwards each to a pod with a free slot, so pods never queue past their concurrency. Which
one is the ServerlessService's mode, decided from the autoscaler's view on every tick:

1. Excess burst capacity (``pkg/autoscaler/scaling/autoscaler.go``): ``floor(ready pods x
   capacity of one pod - target-burst-capacity - panic-window load)``; 0 when
   target-burst-capacity is 0, -1 when it is -1 (unlimited). See
   :func:`excess_burst_capacity`.
2. The KPA reconciler (``pkg/reconciler/autoscaling/kpa/kpa.go``) chooses serve mode only
   when the scale it wants is above zero and the excess burst capacity is not negative; proxy
   mode (the activator in the path) otherwise. See :func:`serve_mode`.
3. The ServerlessService reconciler (``pkg/reconciler/serverlessservice/serverlessservice.go``
   reconcilePublicEndpoints) forces proxy mode while the revision has no ready pod: requests
   at zero always go through the activator. See :meth:`Activator.in_path`.

So with the default target-burst-capacity (211), a revision whose ready pods carry less than
211 requests keeps the activator in its path; with 0 the activator is there only at zero.

The activator's per-revision queue (``pkg/activator/net/throttler.go``, ``breakerQueueDepth``)
holds up to 10,000 requests. Upstream sizes that breaker's pending slots as the queue depth
plus ``revisionMaxConcurrency`` (MaxInt32), so it practically never refuses; knfn refuses the
10,001st waiting request (503), which bounds the memory one revision's waiters take.

Pure: the gateway's throttler asks :meth:`Activator.hold` whether a request that found no free
slot may wait, and the revision runtime feeds :meth:`Activator.follow` each KPA decision.
"""

from __future__ import annotations

import math

# pkg/activator/net/throttler.go breakerQueueDepth.
ACTIVATOR_QUEUE_DEPTH = 10_000

PROXY = "proxy"  # the activator is in the path (SKSOperationModeProxy)
SERVE = "serve"  # requests go straight to the replicas (SKSOperationModeServe)


class Overloaded(Exception):
    """A queue in the revision's path is full: answer 503 ("pending request queue full")."""


def excess_burst_capacity(
    ready_pods: int, pod_capacity: float, target_burst_capacity: float, panic_value: float
) -> int:
    """The spare capacity beyond the burst the revision should absorb (autoscaler.go).

    ``pod_capacity`` is what one replica may carry before the utilization factor (upstream's
    TotalValue), ``panic_value`` the load averaged over the panic window; upstream counts the
    ready pods as they are here, not at least one.
    """
    if target_burst_capacity == 0:
        return 0
    if target_burst_capacity < 0:
        return -1  # unlimited: the activator stays in the path
    return math.floor(ready_pods * pod_capacity - target_burst_capacity - panic_value)


def serve_mode(requested_pods: int, excess: int) -> bool:
    """kpa.go: serve (no activator) when the wanted scale is above zero and the excess burst
    capacity is not negative; proxy otherwise."""
    return requested_pods > 0 and excess >= 0


class Activator:
    """One revision's activator: the mode the KPA last chose, and the requests it holds."""

    def __init__(self, mode: str = SERVE, *, depth: int = ACTIVATOR_QUEUE_DEPTH) -> None:
        self.mode = mode
        self.depth = depth
        self.held = 0  # requests waiting in the activator for a replica slot

    def follow(self, requested_pods: int, excess: int) -> None:
        """Take the mode the KPA reconciler would set after a decision (kpa.go)."""
        self.mode = SERVE if serve_mode(requested_pods, excess) else PROXY

    def in_path(self, ready: int) -> bool:
        """Whether a request arriving now goes through the activator: in proxy mode, and
        always while no replica is ready (serverlessservice.go)."""
        return self.mode == PROXY or ready == 0

    def hold(self) -> None:
        """Take one more request to wait for a slot, or raise Overloaded when the queue is full."""
        if self.held >= self.depth:
            raise Overloaded(f"activator queue full ({self.held} waiting)")
        self.held += 1

    def forwarded(self) -> None:
        """A held request got a slot, or gave up waiting."""
        self.held -= 1
