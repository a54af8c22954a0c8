"""Admission for one revision: queue-proxy's rules, with the activator in front when Knative
would put it there.

- Each replica admits ``containerConcurrency`` requests at once (0: no limit). A request that
  finds no free slot waits where Knative would hold it: in the activator's per-revision queue
  while the activator is in the path (at zero, or while the excess burst capacity is negative:
  knfn/serving/activator.py), else in the replicas' queue-proxy queue, up to 10 x CC per
  replica, past which it is refused (503, "pending request queue full":
  knative/serving pkg/queue/breaker.go, queue depth from pkg/queue/sharedmain/main.go).
- Both queues hand out the replicas' slots by containerConcurrency, first come first served:
  upstream each queue-proxy queues for its own pod; pooled here, which never refuses a request
  another replica had room for.
- With no replica (scaled to zero) requests are held, as the activator holds them, and the
  autoscaler is poked at once (pkg/activator/net/throttler.go).
- Load balancing as the activator's: CC 0, the better of two random choices; CC <= 3, the first
  replica with room; otherwise round robin over those with room (pkg/activator/net/lb_policy.go).
- A meter integrates "requests in the system" (in flight plus waiting) over time: the
  concurrency the autoscaler scales on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from knfn.serving.activator import Activator, Overloaded

__all__ = ["ConcurrencyMeter", "Endpoint", "Overloaded", "Throttler"]

# queue-proxy's queue: 10 x containerConcurrency (pkg/queue/sharedmain/main.go buildBreaker).
QUEUE_DEPTH_PER_SLOT = 10


@dataclass(eq=False)
class Endpoint:
    """A ready replica as the throttler sees it."""

    url: str
    capacity: int  # containerConcurrency; 0 is unlimited
    in_flight: int = 0

    def has_room(self) -> bool:
        return self.capacity == 0 or self.in_flight < self.capacity


class ConcurrencyMeter:
    """Time-weighted average of requests in the system, and a request count, per window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.value = 0
        self._area = 0.0
        self._start = self._last = clock()
        self._requests = 0

    def _advance(self) -> None:
        now = self._clock()
        self._area += self.value * (now - self._last)
        self._last = now

    def enter(self) -> None:
        self._advance()
        self.value += 1
        self._requests += 1

    def leave(self) -> None:
        self._advance()
        self.value -= 1

    def take(self) -> tuple[float, int]:
        """(average concurrency, requests) since the last take; starts a new window."""
        self._advance()
        span = self._last - self._start
        average = self._area / span if span > 0 else float(self.value)
        requests = self._requests
        self._area, self._start, self._requests = 0.0, self._last, 0
        return average, requests


class Throttler:
    """Per-revision admission: pick a replica with room, queue (at the activator or at the
    replicas), or refuse. ``activator`` says when the activator is in the path; without one
    it is there only at zero."""

    def __init__(
        self,
        container_concurrency: int,
        *,
        activator: Activator | None = None,
        on_cold: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rand: random.Random | None = None,
    ) -> None:
        self.cc = container_concurrency
        self._on_cold = on_cold
        self.activator = activator or Activator()
        self.queued = 0  # requests waiting in the replicas' queue-proxy queue
        self._endpoints: list[Endpoint] = []
        # Each waiter, and whether the activator holds it (else a queue-proxy queue does).
        self._waiters: deque[tuple[asyncio.Future[Endpoint], bool]] = deque()
        self._turn = 0
        self._rand = rand or random.Random()
        self.meter = ConcurrencyMeter(clock)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self._endpoints)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot, at the activator or at the replicas."""
        return self.activator.held + self.queued

    @property
    def activator_in_path(self) -> bool:
        """Whether a request arriving now goes through the activator."""
        return self.activator.in_path(len(self._endpoints))

    def queue_limit(self) -> float:
        """queue-proxy's queue over the ready replicas: 10 x CC each (CC 0: no limit)."""
        if self.cc == 0:
            return float("inf")
        return QUEUE_DEPTH_PER_SLOT * self.cc * len(self._endpoints)

    async def acquire(self) -> Endpoint:
        """A replica slot for one request; waits for one, or raises Overloaded (503)."""
        self.meter.enter()
        endpoint = self._pick()
        if endpoint is not None:
            endpoint.in_flight += 1
            return endpoint
        held = self.activator_in_path
        try:
            if held:
                self.activator.hold()
            elif self.queued >= self.queue_limit():
                raise Overloaded(f"pending request queue full ({self.queued} waiting)")
            else:
                self.queued += 1
        except Overloaded:
            self.meter.leave()
            raise
        if not self._endpoints:
            self._on_cold()
        future: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        entry = (future, held)
        self._waiters.append(entry)
        try:
            return await future
        except BaseException:
            if future.done() and not future.cancelled():
                # A slot was handed over just as the wait ended (timeout): give it back.
                self.release(future.result())
            else:
                with contextlib.suppress(ValueError):  # already skipped by _dispatch
                    self._waiters.remove(entry)
                    self._left(held)
                self.meter.leave()
            raise

    def _left(self, held: bool) -> None:
        """A waiter left its queue (served, or gave up)."""
        if held:
            self.activator.forwarded()
        else:
            self.queued -= 1

    def release(self, endpoint: Endpoint) -> None:
        """The request is done: free its slot and hand it to the next waiter."""
        endpoint.in_flight -= 1
        self.meter.leave()
        self._dispatch()

    def add(self, url: str) -> Endpoint:
        """A replica became ready: it takes requests, waiting ones first."""
        endpoint = Endpoint(url, self.cc)
        self._endpoints.append(endpoint)
        self._dispatch()
        return endpoint

    def remove(self, endpoint: Endpoint) -> None:
        """A replica is going: no new requests; its in-flight ones finish."""
        if endpoint in self._endpoints:
            self._endpoints.remove(endpoint)

    def _dispatch(self) -> None:
        while self._waiters:
            endpoint = self._pick()
            if endpoint is None:
                return
            future, held = self._waiters.popleft()
            self._left(held)
            if future.done():
                continue
            endpoint.in_flight += 1
            future.set_result(endpoint)

    def _pick(self) -> Endpoint | None:
        eps = self._endpoints
        if not eps:
            return None
        if self.cc == 0:
            if len(eps) == 1:
                return eps[0]
            a, b = self._rand.sample(eps, 2)
            return a if a.in_flight <= b.in_flight else b
        if self.cc <= 3:
            return next((e for e in eps if e.has_room()), None)
        for _ in range(len(eps)):
            self._turn = (self._turn + 1) % len(eps)
            if eps[self._turn].has_room():
                return eps[self._turn]
        return None
