"""kit.binding: CloudEvents 1.0 over HTTP, binary and structured, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from hypothesis import given
from hypothesis import strategies as st
from kit import binding

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "e-1",
    "ce-source": "/functions/ingest",
    "ce-type": "dev.knfn.object.stored",
    "content-type": "application/json",
}


def test_to_binary_puts_attributes_in_headers_and_data_in_the_body() -> None:
    """Attributes become ce-* headers, datacontenttype the Content-Type, data the body."""
    event = binding.new_event(
        type="t", source="/s", subject="a b", data={"k": 1}, id="i", time="2024-01-01T00:00:00Z"
    )
    message = binding.to_binary(event)
    assert message.headers["ce-id"] == "i"
    assert message.headers["ce-specversion"] == "1.0"
    assert message.headers["ce-subject"] == "a%20b"
    assert message.headers["content-type"] == "application/json"
    assert "ce-datacontenttype" not in message.headers
    assert json.loads(message.body) == {"k": 1}


def test_header_values_are_percent_encoded_per_the_http_binding() -> None:
    """Space, double quote, percent and non-ASCII are encoded; other printable ASCII is not."""
    assert binding.encode_header_value('a "b" 100% é') == "a%20%22b%22%20100%25%20%C3%A9"
    assert binding.encode_header_value("/x?y=z&w") == "/x?y=z&w"


@given(st.text())
def test_header_encoding_round_trips(value: str) -> None:
    """Any string survives encode then decode, and the encoded form is printable ASCII."""
    encoded = binding.encode_header_value(value)
    assert all("\x21" <= c <= "\x7e" for c in encoded)
    assert binding.decode_header_value(encoded) == value


attribute_text = st.text(min_size=1).filter(lambda s: s.strip() == s and s != "")


@given(
    id=attribute_text,
    source=attribute_text,
    subject=st.text(),
    data=st.dictionaries(st.text(), st.integers() | st.text() | st.booleans()),
)
def test_binary_round_trip(id: str, source: str, subject: str, data: dict[str, Any]) -> None:
    """to_binary then from_http gives back the same attributes and JSON data."""
    event = binding.new_event(type="t.x", source=source, subject=subject, data=data, id=id)
    message = binding.to_binary(event)
    back = binding.from_http(message.headers, message.body)
    assert dict(back.get_attributes()) == dict(event.get_attributes())
    assert back.get_data() == data


@given(data=st.binary() | st.text() | st.lists(st.integers()))
def test_structured_round_trip(data: Any) -> None:
    """to_structured then from_http keeps data; bytes travel as data_base64."""
    content_type = "application/json" if isinstance(data, list) else None
    event = binding.new_event(type="t", source="/s", data=data, content_type=content_type)
    message = binding.to_structured(event)
    assert message.headers["content-type"].startswith(binding.STRUCTURED)
    back = binding.from_http(message.headers, message.body)
    assert back["id"] == event["id"]
    assert back.get_data() == data


def test_binary_event_data_is_decoded_by_its_content_type() -> None:
    """JSON content types give objects, text/* gives str, anything else stays bytes."""
    assert binding.from_http(BINARY, b'{"a": 1}').get_data() == {"a": 1}
    text = {**BINARY, "content-type": "text/plain; charset=utf-8"}
    assert binding.from_http(text, b"hi").get_data() == "hi"
    raw = {**BINARY, "content-type": "application/octet-stream"}
    assert binding.from_http(raw, b"\x00\xff").get_data() == b"\x00\xff"
    assert binding.from_http(BINARY, b"").get_data() is None


def test_received_events_get_no_invented_time() -> None:
    """An event sent without time has none after parsing (the SDK would stamp one)."""
    event = binding.from_http(BINARY, b"{}")
    assert "time" not in event.get_attributes()


def test_extensions_and_percent_encoded_values_are_decoded() -> None:
    """ce-<extension> headers become attributes with their values percent-decoded."""
    headers = {**BINARY, "ce-knativeerrordest": "http%3A//x/%20y", "ce-subject": "caf%C3%A9"}
    event = binding.from_http(headers, b"{}")
    assert event["knativeerrordest"] == "http://x/ y"
    assert event["subject"] == "café"


def test_raw_utf8_in_headers_is_read_as_utf8() -> None:
    """A header carrying raw UTF-8 (seen as latin-1 through WSGI) is not mangled."""
    mangled = "café".encode().decode("latin-1")
    event = binding.from_http({**BINARY, "ce-subject": mangled}, b"{}")
    assert event["subject"] == "café"


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({k: v for k, v in BINARY.items() if k != "ce-id"}, b"{}", "missing required header ce-id"),
        ({**BINARY, "ce-specversion": "0.3"}, b"{}", "unsupported specversion '0.3'"),
        ({**BINARY, "ce-Bad_Name": "x"}, b"{}", "invalid attribute names ['bad_name']"),
        (BINARY, b"{not json", "data is not valid JSON"),
        ({"content-type": "application/json"}, b"{}", "not a CloudEvent"),
        ({"content-type": binding.BATCHED}, b"[]", "batched CloudEvents are not supported"),
        ({"content-type": binding.STRUCTURED}, b"{", "structured CloudEvent is not valid JSON"),
        ({"content-type": binding.STRUCTURED}, b"[]", "must be a JSON object"),
        (
            {"content-type": binding.STRUCTURED},
            b'{"specversion": "1.0", "id": "1", "source": "/s"}',
            "missing required attribute type",
        ),
        (
            {"content-type": binding.STRUCTURED},
            b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}',
            "both data and data_base64",
        ),
        (
            {"content-type": binding.STRUCTURED},
            b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}',
            "data_base64 is not valid base64",
        ),
    ],
)
def test_invalid_events_name_the_problem(
    headers: dict[str, str], body: bytes, problem: str
) -> None:
    """Each malformed request raises InvalidEvent (400) whose message names what is wrong."""
    with pytest.raises(binding.InvalidEvent) as caught:
        binding.from_http(headers, body)
    assert caught.value.status == 400
    assert problem in caught.value.message


def test_all_missing_attributes_are_listed_together() -> None:
    """A binary event missing several required headers names all of them."""
    with pytest.raises(binding.InvalidEvent) as caught:
        binding.from_http({"ce-specversion": "1.0"}, b"")
    assert caught.value.fields["problems"] == [
        "missing required header ce-id",
        "missing required header ce-source",
        "missing required header ce-type",
    ]


def test_bytes_and_text_data_get_sensible_content_types() -> None:
    """Bytes default to octet-stream and str to text/plain when no datacontenttype is set."""
    raw = binding.to_binary(CloudEvent({"type": "t", "source": "/s"}, b"\x01"))
    assert raw.headers["content-type"] == "application/octet-stream"
    text = binding.to_binary(CloudEvent({"type": "t", "source": "/s"}, "hi"))
    assert text.headers["content-type"].startswith("text/plain")
    assert text.body == b"hi"


def test_media_type_and_is_json() -> None:
    """Parameters are stripped and +json suffixes count as JSON."""
    assert binding.media_type("Application/JSON; charset=utf-8") == "application/json"
    assert binding.is_json("application/cloudevents+json")
    assert not binding.is_json("text/plain")
    assert not binding.is_json(None)
