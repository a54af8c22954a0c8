"""Delivery policy: durations, specs, backoff, retryable codes, dead letters (destinations:
test_destinations.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from knfn.eventing.delivery import (
    BROKER_DEFAULT,
    MAX_WAIT,
    DeliveryError,
    DeliverySpec,
    Destination,
    backoff_seconds,
    dead_letter_extensions,
    effective,
    is_retryable,
    parse_delivery,
    parse_iso8601_duration,
)

# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0.2S", 0.2),
        ("PT0,5S", 0.5),
        ("PT10S", 10),
        ("PT1M", 60),
        ("PT1.5M", 90),
        ("PT1H30M", 5400),
        ("P1DT2H", 93600),
        ("P1W", 604800),
        ("P1D", 86400),
        ("PT0S", 0),
        ("P0D", 0),
        ("P0", 0),
        ("P1Y", 365.2425 * 86400),
        ("P1M", 30.436875 * 86400),
    ],
)
def test_iso8601_durations(text: str, seconds: float) -> None:
    """ISO-8601 durations in seconds; a year and a month as upstream's period package counts."""
    assert parse_iso8601_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "P1DT", "1S", "PT1", "pt1s", "-PT1S", "PT1S2", "P1H", "T1S", "PT.5S"]
)
def test_invalid_durations_raise_value_error(text: str) -> None:
    """Anything that is not a non-negative ISO-8601 duration is a ValueError."""
    with pytest.raises(ValueError, match="not an ISO-8601 duration"):
        parse_iso8601_duration(text)


# -- delivery specs --------------------------------------------------------------------------


def test_absent_delivery_is_none_and_empty_delivery_retries_nothing() -> None:
    """No delivery block is None; an empty one means no retries and no waits."""
    assert parse_delivery(None, "spec.delivery") is None
    assert parse_delivery({}, "spec.delivery") == DeliverySpec(retry=0, backoff_delay=0.0)


def test_full_delivery_spec() -> None:
    """Every field is read, durations in seconds, the dead-letter sink as a Destination."""
    spec = parse_delivery(
        {
            "retry": 3,
            "backoffPolicy": "linear",
            "backoffDelay": "PT0.5S",
            "timeout": "PT10S",
            "format": "json",
            "deadLetterSink": {"uri": "http://dls.example.com"},
        },
        "spec.delivery",
    )
    assert spec == DeliverySpec(
        retry=3,
        backoff_policy="linear",
        backoff_delay=0.5,
        timeout=10.0,
        dead_letter_sink=Destination(uri="http://dls.example.com"),
        format="json",
    )


@pytest.mark.parametrize(
    "raw", [{"retry": 3, "backoffDelay": "PT1S"}, {"retry": 3, "backoffPolicy": "exponential"}]
)
def test_backoff_needs_both_policy_and_delay(raw: dict[str, Any]) -> None:
    """As retries.go: without both backoffPolicy and backoffDelay there is no wait."""
    spec = parse_delivery(raw, "spec.delivery")
    assert spec is not None and spec.backoff_delay == 0.0
    assert backoff_seconds(spec, 3) == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"retry": -1}, "spec.delivery.retry: -1 must be a whole number >= 0"),
        ({"retry": "3"}, "spec.delivery.retry: '3' must be a whole number"),
        ({"retry": True}, "spec.delivery.retry: True must be a whole number"),
        ({"backoffPolicy": "fibonacci"}, "spec.delivery.backoffPolicy: 'fibonacci' must be"),
        ({"backoffDelay": "0.2s"}, "spec.delivery.backoffDelay: '0.2s' is not an ISO-8601"),
        ({"backoffDelay": 5}, "spec.delivery.backoffDelay: 5 is not an ISO-8601"),
        ({"timeout": "ten seconds"}, "spec.delivery.timeout: 'ten seconds' is not an ISO-8601"),
        ({"timeout": "PT0S"}, "spec.delivery.timeout: 'PT0S' must be greater than zero"),
        ({"format": "xml"}, "spec.delivery.format: 'xml' must be json or binary"),
        # pkg/apis/duck/v1/delivery_types.go Validate: exactly "json" or "binary".
        ({"format": "JSON"}, "spec.delivery.format: 'JSON' must be json or binary"),
        ({"retryAfterMax": "PT1S"}, "spec.delivery.retryAfterMax: needs the delivery-retryafter"),
        ({"deadLetterSink": {}}, "spec.delivery.deadLetterSink: needs a ref or a uri"),
        ([], "spec.delivery: must be an object"),
    ],
)
def test_invalid_delivery_names_the_field(raw: Any, message: str) -> None:
    """Negative retry, unknown policy, bad durations and retryAfterMax are DeliveryErrors
    (unknown fields are refused by knfn/schema.py: tests/unit/test_schema.py)."""
    with pytest.raises(DeliveryError) as info:
        parse_delivery(raw, "spec.delivery")
    assert message in str(info.value)


def test_every_delivery_problem_is_reported_at_once() -> None:
    """All invalid fields are in one message."""
    with pytest.raises(DeliveryError) as info:
        parse_delivery({"retry": -2, "backoffPolicy": "x", "timeout": "y"}, "spec.delivery")
    assert str(info.value).count("spec.delivery.") == 3


# -- trigger and broker ----------------------------------------------------------------------

BROKER_DLS = Destination(uri="http://broker-dls.example.com")
TRIGGER_DLS = Destination(uri="http://trigger-dls.example.com")
BROKER = DeliverySpec(retry=5, backoff_delay=1.0, timeout=30.0, dead_letter_sink=BROKER_DLS)


@pytest.mark.parametrize(
    ("trigger", "broker", "expected"),
    [
        (None, None, BROKER_DEFAULT),
        (None, BROKER, BROKER),
        (DeliverySpec(retry=2), BROKER, DeliverySpec(retry=2, dead_letter_sink=BROKER_DLS)),
        (DeliverySpec(), BROKER, DeliverySpec(retry=0, dead_letter_sink=BROKER_DLS)),
        (
            DeliverySpec(retry=1, dead_letter_sink=TRIGGER_DLS),
            BROKER,
            DeliverySpec(retry=1, dead_letter_sink=TRIGGER_DLS),
        ),
        (DeliverySpec(retry=1), None, DeliverySpec(retry=1)),
        (DeliverySpec(retry=1), DeliverySpec(retry=7), DeliverySpec(retry=1)),
        # filter_handler.go reads only the Trigger's own delivery.format.
        (None, DeliverySpec(retry=7, format="json"), DeliverySpec(retry=7)),
        (DeliverySpec(format="json"), DeliverySpec(format="binary"), DeliverySpec(format="json")),
    ],
)
def test_effective_delivery(
    trigger: DeliverySpec | None, broker: DeliverySpec | None, expected: DeliverySpec
) -> None:
    """A Trigger's delivery replaces the Broker's wholesale, except the dead-letter sink; the
    format is only ever the Trigger's."""
    assert effective(trigger, broker) == expected


def test_broker_default_is_config_br_defaults() -> None:
    """config-br-defaults: retry 10, exponential, PT0.2S, no dead-letter sink."""
    assert (BROKER_DEFAULT.retry, BROKER_DEFAULT.backoff_policy) == (10, "exponential")
    assert (BROKER_DEFAULT.backoff_delay, BROKER_DEFAULT.dead_letter_sink) == (0.2, None)


# -- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "delay", "waits"),
    [
        ("exponential", 0.2, [0.2, 0.4, 0.8, 1.6, 3.2]),
        ("exponential", 1.0, [1, 2, 4, 8, 16]),
        ("linear", 1.0, [0, 1, 2, 3, 4]),
        ("linear", 0.5, [0, 0.5, 1.0, 1.5, 2.0]),
        ("exponential", 0.0, [0, 0, 0, 0, 0]),
    ],
)
def test_backoff_table(policy: str, delay: float, waits: list[float]) -> None:
    """Wait before retry n: exponential delay*2^(n-1), linear delay*(n-1), as retries.go."""
    spec = DeliverySpec(retry=5, backoff_policy=policy, backoff_delay=delay)
    assert [backoff_seconds(spec, n) for n in range(1, 6)] == pytest.approx(waits)


def test_500_500_200_is_delivered_on_the_third_attempt_after_x1_and_x2() -> None:
    """A subscriber answering 500, 500, 200 gets three attempts, waiting delay then 2 x delay."""
    spec = parse_delivery(
        {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}, "spec.delivery"
    )
    assert spec is not None
    answers = iter([500, 500, 200])
    attempts, waits = 0, []
    while True:
        status = next(answers)
        attempts += 1
        if status < 300 or not is_retryable(status) or attempts - 1 >= spec.retry:
            break
        waits.append(backoff_seconds(spec, attempts))
    assert attempts == 3 and waits == pytest.approx([0.2, 0.4])


def test_huge_exponential_waits_stay_finite() -> None:
    """Retry 2000 of an exponential policy waits the longest Go duration, not an overflow."""
    spec = DeliverySpec(retry=5000, backoff_policy="exponential", backoff_delay=0.2)
    assert backoff_seconds(spec, 2000) == MAX_WAIT == pytest.approx(9.223372e9)


def test_retry_numbers_start_at_one() -> None:
    """Retry 0 is the first attempt, which has no wait to compute."""
    with pytest.raises(ValueError):
        backoff_seconds(BROKER_DEFAULT, 0)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (None, True),
        (-1, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (404, True),
        (408, True),
        (409, True),
        (429, True),
        (400, False),
        (401, False),
        (403, False),
        (405, False),
        (410, False),
        (413, False),
        (422, False),
        (200, False),
        (202, False),
        (301, False),
        (304, False),
        (100, False),
    ],
)
def test_retryable_statuses(status: int | None, retryable: bool) -> None:
    """Connection errors, 5xx, 404, 408, 409 and 429 are retried; other 4xx are not."""
    assert is_retryable(status) is retryable


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letter_extensions() -> None:
    """The failed URL, the last status and the response body in base64."""
    assert dead_letter_extensions("http://sub.default.svc.cluster.local", 500, b"boom") == {
        "knativeerrordest": "http://sub.default.svc.cluster.local",
        "knativeerrorcode": "500",
        "knativeerrordata": "Ym9vbQ==",
    }


def test_no_response_is_recorded_as_500_with_the_dispatch_error() -> None:
    """Without a response upstream records 500 and 'dispatch error: <reason>'."""
    ext = dead_letter_extensions("http://x", None, b"", error="connection refused")
    assert ext["knativeerrorcode"] == "500"
    assert base64.b64decode(ext["knativeerrordata"]) == b"dispatch error: connection refused"
    assert dead_letter_extensions("http://x", None, b"")["knativeerrordata"] == ""


@pytest.mark.parametrize(
    ("size", "length", "kept"),
    [(0, 0, 0), (1, 4, 1), (767, 1024, 767), (768, 1024, 768), (769, 1024, 768), (5000, 1024, 768)],
)
def test_error_data_is_at_most_1024_base64_characters(size: int, length: int, kept: int) -> None:
    """The base64 text is cut to 1024 characters: the first 768 bytes of a long body."""
    body = bytes(i % 251 for i in range(size))
    data = dead_letter_extensions("http://x", 502, body)["knativeerrordata"]
    assert len(data) == length and base64.b64decode(data) == body[:kept]
