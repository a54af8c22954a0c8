"""Delivery policy: retries, backoff and dead-letter extensions (destinations: destinations.py).

What each rule follows (knative/eventing):

* ``spec.delivery`` fields and their validation: ``pkg/apis/duck/v1/delivery_types.go``
  (``retry`` >= 0, ``backoffPolicy`` exponential | linear, ``backoffDelay`` and ``timeout`` as
  ISO-8601 durations, ``timeout`` greater than zero, ``format`` json | binary;
  ``retryAfterMax`` belongs to a feature that is off by default, so it is refused).
* Waits (``pkg/kncloudevents/retries.go`` RetryConfigFromDeliverySpec, called by
  hashicorp/go-retryablehttp with the attempt number counted from 0 for the first retry): before
  retry *n* (1 = the first), exponential waits ``backoffDelay * 2^(n-1)`` and linear waits
  ``backoffDelay * (n-1)``, so a linear policy retries the first time at once. Without both a
  policy and a delay upstream waits nothing between retries; :func:`parse_delivery` gives such a
  spec ``backoff_delay`` 0.
* Which failures are retried: ``retries.go`` SelectiveRetry.
* A Broker without ``spec.delivery`` gets ``config-br-defaults`` (retry 10, exponential, PT0.2S),
  wholesale: a Broker that sets only a dead-letter sink gets no retries
  (``pkg/apis/eventing/v1/broker_defaults.go``).
* Trigger and Broker (``pkg/reconciler/broker/trigger/trigger.go`` subscribeToBrokerChannel and
  resolveDeadLetterSink; ``pkg/reconciler/subscription/subscription.go`` deliverySpec): a
  Trigger's ``delivery``, when present, replaces the Broker's wholesale (retry, backoff, timeout:
  fields it leaves out are not taken from the Broker), except the dead-letter sink: without its
  own, a Trigger uses the Broker's. ``format`` is the Trigger's own or none: the broker filter
  reads only ``trigger.Spec.Delivery.Format`` (``pkg/broker/filter/filter_handler.go``), so a
  Broker's ``format`` is accepted and changes nothing a subscriber sees.
* Dead-letter extensions: ``pkg/kncloudevents/event_dispatcher.go``
  dispatchExecutionInfoTransformers and ``pkg/kncloudevents/attributes/knative_error.go``:
  the response body is base64-encoded and the encoded text cut to 1024 characters (so at most
  the first 768 bytes of the body survive); a request that got no response at all is recorded
  as code 500 with the body ``dispatch error: <reason>``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Destinations are read by their own module; these names stay importable from here.
from knfn.eventing.destinations import Destination as Destination
from knfn.eventing.destinations import parse_destination as parse_destination
from knfn.eventing.errors import DeliveryError as DeliveryError
from knfn.eventing.errors import Problem

POLICIES = ("exponential", "linear")
FORMATS = ("json", "binary")
ERROR_DATA_MAX = 1024  # characters of knativeerrordata (KnativeErrorDataExtensionMaxLength)
RETRYABLE_4XX = frozenset({404, 408, 409, 429})
# The longest wait Go's time.Duration holds (2^63 - 1 ns, about 292 years): a high retry count
# with an exponential policy stays a finite date.
MAX_WAIT = (2**63 - 1) / 1e9

# rickb777/date/period, which upstream parses durations with, counts a year as 365.2425 days
# and a month as 30.436875 days.
_UNIT_SECONDS = {
    "Y": 365.2425 * 86400,
    "MO": 30.436875 * 86400,
    "W": 7 * 86400,
    "D": 86400,
    "H": 3600,
    "MI": 60,
    "S": 1,
}
_NUMBER = r"\d+(?:[.,]\d+)?"
_DURATION = re.compile(
    rf"P(?:(?P<Y>{_NUMBER})Y)?(?:(?P<MO>{_NUMBER})M)?(?:(?P<W>{_NUMBER})W)?(?:(?P<D>{_NUMBER})D)?"
    rf"(?:T(?:(?P<H>{_NUMBER})H)?(?:(?P<MI>{_NUMBER})M)?(?:(?P<S>{_NUMBER})S)?)?",
    re.ASCII,
)


def parse_iso8601_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as PT0.2S, PT1M or P1DT2H (ValueError otherwise)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO-8601 duration")
    if text == "P0":
        return 0.0
    match = _DURATION.fullmatch(text)
    parts = match.groupdict() if match else {}
    if not match or not any(parts.values()) or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration such as PT0.2S, PT1M or P1DT2H")
    return sum(
        float(value.replace(",", ".")) * _UNIT_SECONDS[unit]
        for unit, value in parts.items()
        if value is not None
    )


@dataclass(frozen=True)
class DeliverySpec:
    """spec.delivery of a Trigger or Broker; defaults are those of an empty ``delivery: {}``."""

    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.0  # seconds; 0 unless both backoffPolicy and backoffDelay are set
    timeout: float | None = None  # seconds per attempt
    dead_letter_sink: Destination | None = None
    format: str | None = None  # "json" (structured) or "binary"; None: binary


# config-br-defaults (config/core/configmaps/default-broker.yaml).
BROKER_DEFAULT = DeliverySpec(retry=10, backoff_policy="exponential", backoff_delay=0.2)


def parse_delivery(raw: Mapping[str, Any] | None, where: str) -> DeliverySpec | None:
    """spec.delivery (None when absent); DeliveryError lists every invalid field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DeliveryError.of(where, "must be an object")
    # Unknown fields were refused when the manifests were read (knfn/schema.py); retryAfterMax
    # is a known field there, but its feature is off.
    problems: list[Problem] = []
    if "retryAfterMax" in raw:
        problems.append(
            Problem(f"{where}.retryAfterMax", "needs the delivery-retryafter feature, which is off")
        )

    retry = raw.get("retry", 0)
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
        problems.append(Problem(f"{where}.retry", f"{retry!r} must be a whole number >= 0"))
        retry = 0

    policy = raw.get("backoffPolicy")
    if policy is not None and policy not in POLICIES:
        problems.append(
            Problem(f"{where}.backoffPolicy", f"{policy!r} must be exponential or linear")
        )

    delay = _duration(raw.get("backoffDelay"), f"{where}.backoffDelay", problems)
    timeout = _duration(raw.get("timeout"), f"{where}.timeout", problems)
    if timeout == 0:
        problems.append(
            Problem(f"{where}.timeout", f"{raw.get('timeout')!r} must be greater than zero")
        )

    fmt = raw.get("format")
    if fmt is not None and fmt not in FORMATS:
        problems.append(Problem(f"{where}.format", f"{fmt!r} must be json or binary"))

    sink: Destination | None = None
    if raw.get("deadLetterSink") is not None:
        try:
            sink = parse_destination(raw["deadLetterSink"], f"{where}.deadLetterSink")
        except DeliveryError as exc:
            problems.extend(exc.problems)

    if problems:
        raise DeliveryError(problems)
    return DeliverySpec(
        retry=retry,
        backoff_policy=policy or "exponential",
        # retries.go sets a backoff only when both the policy and the delay are given.
        backoff_delay=delay if policy is not None and delay is not None else 0.0,
        timeout=timeout,
        dead_letter_sink=sink,
        format=fmt,
    )


def _duration(raw: Any, where: str, problems: list[Problem]) -> float | None:
    if raw is None:
        return None
    try:
        return parse_iso8601_duration(raw)
    except ValueError as exc:
        problems.append(Problem(where, str(exc)))
        return None


def effective(trigger: DeliverySpec | None, broker: DeliverySpec | None) -> DeliverySpec:
    """The delivery a Trigger's events get, from its own and its Broker's ``spec.delivery``.

    ``broker`` None means the Broker has no ``spec.delivery``, so config-br-defaults applies.
    A Trigger's delivery replaces the Broker's wholesale; only the dead-letter sink falls back
    to the Broker's when the Trigger has none. The format is only ever the Trigger's.
    """
    broker = BROKER_DEFAULT if broker is None else broker
    if trigger is None:
        return replace(broker, format=None)
    if trigger.dead_letter_sink is None and broker.dead_letter_sink is not None:
        return replace(trigger, dead_letter_sink=broker.dead_letter_sink)
    return trigger


def backoff_seconds(spec: DeliverySpec, retry_number: int) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the first retry), as retries.go does.

    Capped at :data:`MAX_WAIT`, the largest duration Go can express.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number {retry_number} must be 1 or more")
    attempt = retry_number - 1  # go-retryablehttp passes 0 for the first retry
    if spec.backoff_policy == "linear":
        wait = spec.backoff_delay * attempt
    else:
        wait = spec.backoff_delay * float(1 << min(attempt, 64))
    return min(wait, MAX_WAIT)


def is_retryable(status: int | None) -> bool:
    """Whether a failed attempt is retried: no response (None), 5xx, 404, 408, 409 and 429."""
    if status is None or status < 0:
        return True
    return status >= 500 or status in RETRYABLE_4XX


def dead_letter_extensions(
    destination_url: str, status: int | None, body: bytes, *, error: str | None = None
) -> dict[str, str]:
    """knativeerrordest, knativeerrorcode and knativeerrordata for a dead-lettered event.

    ``status`` None means no response (connection refused, timeout): upstream records that as
    500 with the body ``dispatch error: <reason>``; pass the reason as ``error`` to get the same.
    """
    if status is None:
        status = 500
        if error is not None and not body:
            body = f"dispatch error: {error}".encode()
    encoded = base64.b64encode(body).decode("ascii")[:ERROR_DATA_MAX]
    return {
        "knativeerrordest": destination_url,
        "knativeerrorcode": str(status),
        "knativeerrordata": encoded,
    }
