"""The open-loop schedule of ``--rps``: when each request is meant to go.

A fixed arrival rate: request ``i`` is due at ``i / rate`` seconds, whatever happened to the
ones before it. The sender does not wait for answers (it is not a closed loop), and a request
it sends late keeps its due time, so its latency counts the delay (knfn/load/stats.py).
Pure: the shell sleeps until each due time and sends everything that is due.
"""

from __future__ import annotations

import math
from collections.abc import Iterator


def count(rate: float, duration: float) -> int:
    """How many requests a run of `duration` seconds at `rate` per second sends."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, not {rate} and {duration}")
    # Rounded before flooring, so 0.1 s at 50/s is 5 requests, not 4.999... -> 4.
    return math.floor(round(rate * duration, 9))


def arrivals(rate: float, duration: float) -> Iterator[float]:
    """The due times (seconds from the start) of every request, in order."""
    for i in range(count(rate, duration)):
        yield i / rate


def due(times: list[float], start: int, now: float) -> int:
    """The index after the last of times[start:] that is due at `now` (times sorted)."""
    end = start
    while end < len(times) and times[end] <= now:
        end += 1
    return end
