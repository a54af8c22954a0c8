"""The Knative Pod Autoscaler's decision for one revision: pure, and driven by an injected clock.

No sockets, no threads, no real time: every method that depends on time takes ``now`` (seconds,
any monotonic origin), so a test replays minutes of traffic in microseconds. The shell around
this (``knfn dev``) owns the clock, the 2 s tick and the replicas:

* while a revision has ready replicas, report each second's load with
  :meth:`Autoscaler.record` (the average number of requests in flight over that second and the
  number of requests that arrived in it), as queue-proxy and the activator report to the
  autoscaler upstream; a second without a report counts as idle;
* every tick (``scaling.tick_interval``), call :meth:`Autoscaler.decide` with the number of
  ready replicas and scale to :attr:`Decision.desired_pods`;
* when a request arrives for a revision with no ready replica, call :meth:`Autoscaler.poke`
  and then :meth:`Autoscaler.decide` at once, without waiting for the tick, as the activator
  pokes the autoscaler upstream;
* start a new revision with :meth:`Autoscaler.initial_pods` replicas.

What one decision does, and where upstream does it (knative/serving):

1. The load is averaged over the stable window and over the shorter panic window, from 1 s
   buckets (``pkg/autoscaler/aggregation/bucketing.go``; see :class:`MetricWindow`).
2. ``ready = max(1, ready replicas)``; desired = ``ceil(average / target per replica)`` for each
   window, each kept within ``[floor(ready / max-scale-down-rate),
   ceil(max-scale-up-rate * ready)]``; with ``activation-scale`` set, any non-zero desire is at
   least that (``pkg/autoscaler/scaling/autoscaler.go``).
3. Panic starts when the panic desire reaches ``panic-threshold-percentage`` of ``ready``;
   while panicking the result is the larger desire and never goes down; panic ends once the
   panic desire has stayed below the threshold for a whole stable window (same file).
4. ``scale-down-delay``: the result is the highest one decided within that delay
   (``pkg/autoscaler/aggregation/max``).
5. ``min-scale``, ``max-scale``, and ``initial-scale`` until that many replicas have been ready
   (``pkg/reconciler/autoscaling/kpa/scaler.go``).
6. Zero only when ``enable-scale-to-zero``, ``min-scale`` 0 and the revision has had no load
   for the stable window: the revision is first marked inactive (once it has been active for a
   stable window), then its last replica goes after ``max(scale-to-zero-grace-period,
   scale-to-zero-pod-retention-period)`` more (``kpa/scaler.go`` handleScaleToZero).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from knfn.serving.activator import excess_burst_capacity
from knfn.serving.autoscaler_config import BUCKET_SIZE, RPS
from knfn.serving.autoscaling import RevisionScaling

# bucketing.go rounds window averages to 6 digits, so that 209.9999999 over a target of 70
# does not become 4 replicas.
_AVERAGE_DIGITS = 6


class MetricWindow:
    """Values summed into 1 s buckets and averaged over a sliding window.

    Reproduces the behaviour of upstream's TimedFloat64Buckets
    (pkg/autoscaler/aggregation/bucketing.go):

    * a second between two reports counts as zero;
    * the average is over the seconds since the first report when that is less than a window
      ago (a partial window), not diluted by seconds nobody reported yet;
    * seconds after the last report are left out too, so an average does not sink merely
      because the latest report is late;
    * after a whole window with no report it starts over, partial again; a report older than
      the window is dropped.
    """

    def __init__(self, window: float, granularity: float = BUCKET_SIZE) -> None:
        self.window = window
        self._granularity = granularity
        self._size = max(1, math.ceil(window / granularity))
        self._buckets = [0.0] * self._size
        self._first: int | None = None  # index of the earliest bucket with a valid value
        self._last: int | None = None  # index of the latest bucket written

    def _index(self, now: float) -> int:
        return math.floor(now / self._granularity)

    def record(self, now: float, value: float) -> None:
        """Add ``value`` to the bucket of second ``now``."""
        index = self._index(now)
        if self._first is None or self._last is None or index - self._last >= self._size:
            self._buckets = [0.0] * self._size
            self._first = self._last = index
        elif index > self._last:
            for skipped in range(self._last + 1, index + 1):
                self._buckets[skipped % self._size] = 0.0
            self._last = index
        elif index <= self._last - self._size:
            return
        else:
            self._first = min(self._first, index)
        self._buckets[index % self._size] += value

    def is_empty(self, now: float) -> bool:
        """Nothing reported for longer than the window (upstream: no data to scale on)."""
        return self._last is None or self._index(now) - self._last > self._size

    def average(self, now: float) -> float:
        """Average per second over the window ending at ``now`` (0 with nothing in it)."""
        if self._first is None or self._last is None:
            return 0.0
        end = max(self._index(now), self._last)
        low = max(self._first, end - self._size + 1)
        if self._last < low:
            return 0.0
        total = sum(self._buckets[i % self._size] for i in range(low, self._last + 1))
        return round(total / (self._last - low + 1), _AVERAGE_DIGITS)


class MaxWindow:
    """The highest value recorded within the last ``window`` seconds, in ``granularity`` slots
    (pkg/autoscaler/aggregation/max: a descending-maxima queue)."""

    def __init__(self, window: float, granularity: float) -> None:
        self._granularity = granularity
        self._slots = max(1, math.ceil(window / granularity))
        self._maxima: deque[tuple[int, int]] = deque()  # (slot, value), values descending

    def record(self, now: float, value: int) -> None:
        slot = math.floor(now / self._granularity)
        # A value no larger than the new one, and older, can never be the maximum again.
        while self._maxima and self._maxima[-1][1] <= value:
            self._maxima.pop()
        while self._maxima and slot - self._maxima[0][0] >= self._slots:
            self._maxima.popleft()
        if self._maxima and self._maxima[-1][0] == slot:
            value = max(value, self._maxima.pop()[1])
        self._maxima.append((slot, value))

    def current(self) -> int:
        return self._maxima[0][1] if self._maxima else 0


@dataclass(frozen=True)
class Decision:
    """One tick's outcome for a revision.

    ``excess_burst_capacity`` is upstream's EBC: spare capacity beyond the target burst
    capacity; negative means the activator should stay in the request path, -1 with an
    unlimited burst capacity, 0 when none is asked for. ``panic_since`` is when the current
    panic started (the clock's reading), None when not panicking.
    """

    desired_pods: int
    panicking: bool
    excess_burst_capacity: int
    stable_value: float
    panic_value: float
    reason: str
    panic_since: float | None = None


class Autoscaler:
    """The KPA for one revision. Not thread-safe: one loop calls it."""

    def __init__(self, scaling: RevisionScaling) -> None:
        self.scaling = scaling
        self._stable = MetricWindow(scaling.stable_window)
        self._panic = MetricWindow(scaling.panic_window)
        # Only with a delay: a one-slot window is not quite "no delay" (autoscaler.go New).
        self._delay = (
            MaxWindow(scaling.scale_down_delay, scaling.tick_interval)
            if scaling.scale_down_delay > 0
            else None
        )
        self._panic_time: float | None = None  # last time the panic threshold was reached
        self._panic_started: float | None = None  # when the current panic began
        self._max_panic_pods = 0
        self._desired = self.initial_pods()
        self._ebc = self._initial_excess_burst_capacity()
        self._initialized = False  # initial-scale replicas have been ready once
        self._active_since: float | None = None  # ready and wanted, since
        self._inactive_since: float | None = None  # idle for a stable window, since
        self._activating = False  # poked at zero; no replica ready yet
        self.last = Decision(
            self._desired, False, self._ebc, 0.0, 0.0, "no decision yet"
        )  # the latest decision, for /status and /metrics

    # ---- inputs -------------------------------------------------------------------------

    def initial_pods(self) -> int:
        """Replicas a new revision starts with: initial-scale, within min- and max-scale."""
        return self._bounded(max(self.scaling.initial_scale, self.scaling.min_scale))

    def record(self, now: float, concurrency: float, requests: float = 0.0) -> None:
        """One second's report: average requests in flight over it, and requests that arrived
        in it. Reports for the same second (several replicas, the activator) add up."""
        value = requests if self.scaling.metric == RPS else concurrency
        self._stable.record(now, value)
        self._panic.record(now, value)

    def poke(self, now: float) -> None:
        """A request arrived and no replica is ready: make decisions at least
        ``max(1, activation-scale)`` until a replica is ready. Call :meth:`decide` next.

        The first poke of a cold start also counts its request (one in flight, one arrival),
        as the activator reports a revision's first request at once; later ones are left to
        the regular per-second reports."""
        if not self._activating:
            self.record(now, 1.0, 1.0)
        self._activating = True

    @property
    def desired_pods(self) -> int:
        """The latest decision (the initial scale before the first)."""
        return self._desired

    @property
    def panicking(self) -> bool:
        return self._panic_time is not None

    # ---- the decision -------------------------------------------------------------------

    def decide(self, now: float, ready_pods: int) -> Decision:
        """How many replicas the revision should have at ``now``, given ``ready_pods``."""
        s = self.scaling
        if ready_pods > 0:
            # Ready replicas report every second, busy or idle; stand in for those reports,
            # so that a second nobody recorded is an idle second, as upstream would see it.
            self.record(now, 0.0, 0.0)
            self._activating = False
            if self._active_since is None:
                self._active_since = now
        else:
            self._active_since = None
        if not self._initialized and ready_pods >= self.initial_pods():
            self._initialized = True

        notes: list[str] = []
        if self._stable.is_empty(now):
            # autoscaler.go: no data to scale on yet; the last decision stands.
            desired, stable, panic = self._desired, 0.0, 0.0
            notes.append(f"no {s.metric} reported within the stable window: holding {desired}")
        else:
            stable, panic = self._stable.average(now), self._panic.average(now)
            desired = self._scale(now, max(1, ready_pods), stable, panic, notes)
            self._ebc = self._excess_burst_capacity(ready_pods, panic)
            desired = self._apply_bounds(desired, notes)
            if desired == 0:
                desired = self._scale_to_zero(now, notes)
            elif self._inactive_since is not None:
                self._inactive_since = None
                self._active_since = now if ready_pods > 0 else None
        if self._activating:
            desired = max(desired, self._bounded(max(1, s.activation_scale)))
            notes.append(f"activator: a request waits for a replica; {desired}")
        self._desired = desired
        self.last = Decision(
            desired_pods=desired,
            panicking=self.panicking,
            excess_burst_capacity=self._ebc,
            stable_value=stable,
            panic_value=panic,
            reason="; ".join(notes),
            panic_since=self._panic_started,
        )
        return self.last

    def _scale(self, now: float, ready: int, stable: float, panic: float, notes: list[str]) -> int:
        """Steps 2 to 4 of the module docstring (autoscaler.go Scale)."""
        s = self.scaling
        most = math.ceil(s.max_scale_up_rate * ready)
        least = math.floor(ready / s.max_scale_down_rate)
        want_stable = math.ceil(stable / s.target)
        want_panic = math.ceil(panic / s.target)
        stable_pods = min(max(want_stable, least), most)
        panic_pods = min(max(want_panic, least), most)
        if s.activation_scale > 1:
            if want_stable > 0:
                stable_pods = max(stable_pods, s.activation_scale)
            if want_panic > 0:
                panic_pods = max(panic_pods, s.activation_scale)

        # The unclamped panic desire is what is compared with the threshold.
        if want_panic / ready >= s.panic_threshold_percentage / 100.0:
            if self._panic_time is None:
                notes.append("panic started")
                self._panic_started = now
            self._panic_time = now
        elif self._panic_time is not None and self._panic_time + s.stable_window < now:
            notes.append("panic over: below the threshold for a stable window")
            self._panic_time = self._panic_started = None
            self._max_panic_pods = 0

        notes.append(
            f"{s.metric} {stable:g} over {s.stable_window:g}s, {panic:g} over "
            f"{s.panic_window:g}s, target {s.target:g} per replica: "
            f"stable {stable_pods}, panic {panic_pods} (ready {ready}, range {least}..{most})"
        )
        desired = stable_pods
        if self._panic_time is not None:
            self._max_panic_pods = max(self._max_panic_pods, stable_pods, panic_pods)
            desired = self._max_panic_pods
            notes.append(f"panicking: {desired}, never fewer until panic ends")
        if self._delay is not None:
            self._delay.record(now, desired)
            held = self._delay.current()
            if held != desired:
                notes.append(f"scale-down-delay {s.scale_down_delay:g}s holds {held}")
                desired = held
        return desired

    def _apply_bounds(self, desired: int, notes: list[str]) -> int:
        """Step 5: min-scale, max-scale and, until reached once, initial-scale."""
        s = self.scaling
        least = s.min_scale
        if not self._initialized and s.initial_scale > 1:
            least = max(least, s.initial_scale)
        bounded = self._bounded(max(desired, least))
        if bounded != desired:
            notes.append(f"bounds {least}..{s.max_scale or 'unlimited'}: {bounded}")
        return bounded

    def _bounded(self, pods: int) -> int:
        pods = max(pods, self.scaling.min_scale)
        return min(pods, self.scaling.max_scale) if self.scaling.max_scale > 0 else pods

    def _scale_to_zero(self, now: float, notes: list[str]) -> int:
        """Step 6 (kpa/scaler.go handleScaleToZero): whether the last replica may go yet."""
        s = self.scaling
        if not s.enable_scale_to_zero:
            notes.append("enable-scale-to-zero is false: keeping 1")
            return 1
        if self._inactive_since is None:
            if self._active_since is None:
                # Activating (no replica ready yet): upstream leaves the scale alone.
                notes.append(f"idle while no replica is ready: holding {self._desired}")
                return self._desired
            active_for = now - self._active_since
            if active_for < s.stable_window:
                notes.append(
                    f"idle; scale to zero once active for the stable window "
                    f"({s.stable_window - active_for:g}s left)"
                )
                return 1
            self._inactive_since = now
        wait = max(s.scale_to_zero_grace_period, s.scale_to_zero_pod_retention_period)
        inactive_for = now - self._inactive_since
        if inactive_for < wait:
            notes.append(f"idle for the stable window; scale to zero in {wait - inactive_for:g}s")
            return 1
        self._active_since = None
        notes.append("idle for the stable window and the grace period: scale to zero")
        return 0

    # ---- burst capacity -----------------------------------------------------------------

    def _excess_burst_capacity(self, ready_pods: int, panic: float) -> int:
        s = self.scaling
        return excess_burst_capacity(ready_pods, s.total_target, s.target_burst_capacity, panic)

    def _initial_excess_burst_capacity(self) -> int:
        # multiscaler.go createScaler: as if the initial replicas were ready and idle.
        s = self.scaling
        return excess_burst_capacity(s.initial_scale, s.total_target, s.target_burst_capacity, 0.0)
