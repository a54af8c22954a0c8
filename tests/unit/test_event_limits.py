"""Event limits: what the broker refuses as impossible to store, deliver or dead-letter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knfn.eventing.cloudevent import (
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTES,
    MAX_JSON_DEPTH,
    InvalidEvent,
    check_json,
    check_limits,
    encode_header_value,
    from_http,
    json_depth,
)

REQUIRED = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
HEADERS = {f"ce-{k}": v for k, v in REQUIRED.items()}


def reason(headers: dict[str, str], body: bytes = b"") -> str:
    with pytest.raises(InvalidEvent) as info:
        from_http(headers, body)
    return str(info.value)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nul_in_a_binary_header_is_refused_naming_the_attribute() -> None:
    """ce-id: a%00b is a 400 naming 'id' and NUL."""
    message = reason({**HEADERS, "ce-id": "a%00b"})
    assert "'id'" in message and "NUL" in message


def test_nul_in_a_structured_attribute_is_refused() -> None:
    """A \\u0000 in a structured member is refused naming the attribute."""
    body = json.dumps({**REQUIRED, "subject": "a\u0000b"}).encode()
    message = reason({"Content-Type": "application/cloudevents+json"}, body)
    assert "'subject'" in message and "NUL" in message


def test_lone_surrogate_in_a_structured_attribute_is_refused() -> None:
    """A \\ud800 escape in a member is a lone surrogate, named as such."""
    body = b'{"specversion":"1.0","id":"\\ud800","source":"/s","type":"t"}'
    message = reason({"Content-Type": "application/cloudevents+json"}, body)
    assert "'id'" in message and "surrogate" in message


def test_an_id_too_long_for_a_header_line_is_refused() -> None:
    """A 9,000-character id cannot travel as a header: refused with the size and the limit."""
    message = reason({**HEADERS, "ce-id": "x" * 9000})
    assert "'id'" in message and str(MAX_ATTRIBUTE_BYTES) in message


def test_the_limit_counts_percent_encoded_bytes() -> None:
    """Non-ASCII grows threefold once percent-encoded; the limit applies to the encoded form."""
    fits = "x" * MAX_ATTRIBUTE_BYTES
    assert check_limits({**REQUIRED, "subject": fits}, None) == []
    euros = "\u20ac" * (MAX_ATTRIBUTE_BYTES // 9 + 1)  # 9 encoded bytes each
    assert len(encode_header_value(euros)) > MAX_ATTRIBUTE_BYTES
    assert "'subject'" in check_limits({**REQUIRED, "subject": euros}, None)[0]


def test_too_many_attributes_are_refused() -> None:
    """Each attribute is a header; the count is bounded."""
    extra = {f"ext{i}": "v" for i in range(MAX_ATTRIBUTES)}
    assert "attributes" in check_limits({**REQUIRED, **extra}, None)[0]
    fits = {f"ext{i}": "v" for i in range(MAX_ATTRIBUTES - len(REQUIRED))}
    assert check_limits({**REQUIRED, **fits}, None) == []


def test_datacontenttype_must_be_printable_ascii() -> None:
    """It is sent raw as Content-Type, so control characters and non-ASCII are refused."""
    body = json.dumps({**REQUIRED, "datacontenttype": "text/plain; x=\u00e9"}).encode()
    assert "datacontenttype" in reason({"Content-Type": "application/cloudevents+json"}, body)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'["[[[[", "\\"[["]', 1),
        (nested(3000), 3000),
    ],
)
def test_json_depth_skips_strings(text: bytes, depth: int) -> None:
    """Brackets inside strings (escaped quotes too) do not count."""
    assert json_depth(text) == depth


def test_binary_json_data_nested_too_deep_is_refused() -> None:
    """JSON data nested 3,000 deep would break a subscriber's parser: refused with the depth."""
    headers = {**HEADERS, "Content-Type": "application/json"}
    message = reason(headers, nested(3000))
    assert "3000" in message and str(MAX_JSON_DEPTH) in message
    from_http(headers, nested(MAX_JSON_DEPTH))


def test_binary_non_json_data_is_not_inspected() -> None:
    """Brackets in data that is not declared JSON are just bytes."""
    event = from_http({**HEADERS, "Content-Type": "text/plain"}, nested(3000))
    assert event.data == nested(3000)


def test_structured_body_nested_too_deep_is_refused_before_parsing() -> None:
    """A structured body nested 3,000 deep is refused naming the depth, never a RecursionError."""
    body = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":' + nested(3000) + b"}"
    assert "3001 levels" in reason({"Content-Type": "application/cloudevents+json"}, body)


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (b'{"a": "\\u0000"}', True),
        (b'{"a": "\\\\u0000"}', False),  # an escaped backslash, then the text u0000
        (b'{"a": "\\\\\\u0000"}', True),
        (b'{"a": "\\ud83d\\ude00"}', False),  # a surrogate pair: one emoji
        (b'{"a": "\\ud83d"}', True),
        (b'{"a": "\\ude00x"}', True),
        (b'{"a": "\\u0001"}', False),
    ],
)
def test_json_escapes_jsonb_cannot_hold(text: bytes, refused: bool) -> None:
    """\\u0000 and lone surrogate escapes are refused; escaped backslashes and pairs are not."""
    assert bool(check_json(text, "data")) is refused


def test_structured_json_data_with_nul_is_refused() -> None:
    """A NUL in structured JSON data would break a jsonb store of it: refused naming data."""
    body = json.dumps({**REQUIRED, "data": {"k": "a\u0000b"}}).encode()
    assert "data" in reason({"Content-Type": "application/cloudevents+json"}, body)


def test_every_problem_is_reported_at_once() -> None:
    """A NUL id and an overlong subject: both named in one message."""
    message = reason({**HEADERS, "ce-id": "%00", "ce-subject": "s" * 5000})
    assert "'id'" in message and "'subject'" in message


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_check_limits_never_raises(value: str) -> None:
    """Any string as an attribute value gives a verdict, never an exception."""
    problems = check_limits({**REQUIRED, "subject": value}, None)
    assert bool(problems) == (
        "\x00" in value
        or any("\ud800" <= c <= "\udfff" for c in value)
        or len(encode_header_value(value)) > MAX_ATTRIBUTE_BYTES
    )


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b'"' + b"a" * 200_000, 0),  # unterminated: exponential with a nested quantifier
        (b'["' + b'\\"' * 100_000, 1),  # every escaped quote a place a failing match restarts
        (b'["' + b'\\"' * 100_000 + b"\\", 1),  # and a lone backslash at the very end
        (b'[["a' + b"[" * 1000, 2),  # brackets after an unterminated quote are in its string
    ],
)
def test_json_depth_is_linear_on_unterminated_strings(text: bytes, depth: int) -> None:
    """Hostile bodies the ingress fuzzing found: each once hung the event loop for good. An
    alarm turns a hang into a failure."""
    import signal

    def hung(*_: object) -> None:
        raise TimeoutError("json_depth backtracked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        assert json_depth(text) == depth
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
