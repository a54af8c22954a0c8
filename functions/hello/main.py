"""hello: the autoscaling demo, after Knative's autoscale-go sample.

`GET /?sleep=<ms>&prime=<n>&bloat=<mb>` sleeps, finds the largest prime below n, and
allocates and touches mb megabytes, each only if asked and each bounded by a HELLO_MAX_*
limit. Send it load and watch the revision scale out on concurrency, then back to zero.
The answer names the revision that served it, which makes traffic splits visible.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

import flask
import kit
from kit import config, handlers
from kit import logging as kit_logging
from kit.errors import BadRequest

MEGABYTE = 1024 * 1024
PAGE = 4096


@dataclass(frozen=True)
class Settings:
    """What hello reads from its environment."""

    log: kit_logging.LogSettings
    max_sleep_ms: Annotated[
        int, config.env("HELLO_MAX_SLEEP_MS", config.integer(min=0), default=30_000)
    ]
    max_prime: Annotated[
        int, config.env("HELLO_MAX_PRIME", config.integer(min=0), default=50_000_000)
    ]
    max_bloat_mb: Annotated[
        int, config.env("HELLO_MAX_BLOAT_MB", config.integer(min=0), default=512)
    ]


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
log = kit_logging.get_logger("hello")


def parameter(request: flask.Request, name: str, limit: int) -> int | None:
    """The integer query parameter `name` in [0, limit], None if absent; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    reason = f"must be an integer from 0 to {limit}"
    try:
        value = int(raw, 10)
    except ValueError:
        raise BadRequest(f"{name} {reason}", parameter=name, value=raw, max=limit) from None
    if not 0 <= value <= limit:
        raise BadRequest(f"{name} {reason}", parameter=name, value=raw, max=limit)
    return value


def largest_prime_below(n: int) -> int | None:
    """The largest prime p < n (None when n <= 2), by a sieve of Eratosthenes: real CPU work."""
    if n <= 2:
        return None
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return sieve.rindex(1)


def bloat(megabytes: int) -> int:
    """Allocate `megabytes` MB and write to every page, so the memory is really resident."""
    block = bytearray(megabytes * MEGABYTE)
    block[::PAGE] = b"\x01" * len(range(0, len(block), PAGE))
    return len(block) // MEGABYTE


@kit.http_function
def hello(request: flask.Request) -> flask.Response:
    """Do the work the query asks for and say which revision did it."""
    handlers.require_method(request, "GET", "HEAD")
    sleep_ms = parameter(request, "sleep", SETTINGS.max_sleep_ms)
    prime = parameter(request, "prime", SETTINGS.max_prime)
    bloat_mb = parameter(request, "bloat", SETTINGS.max_bloat_mb)

    did: dict[str, Any] = {}
    if sleep_ms is not None:
        started = time.monotonic()
        time.sleep(sleep_ms / 1000)
        did["slept_ms"] = round((time.monotonic() - started) * 1000, 2)
    if prime is not None:
        did["prime"] = {"below": prime, "largest": largest_prime_below(prime)}
    if bloat_mb is not None:
        did["bloat_mb"] = bloat(bloat_mb)

    log.info("hello", **did)
    return handlers.json_response(
        {
            "message": f"Hello from {SETTINGS.log.revision or 'an unnamed revision'}",
            "service": SETTINGS.log.service,
            "revision": SETTINGS.log.revision,
            **did,
        }
    )
