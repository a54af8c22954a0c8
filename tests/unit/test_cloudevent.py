"""CloudEvents 1.0 over HTTP: binary and structured mode, validation, replies, round trips."""

from __future__ import annotations

import base64
import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knfn.errors import KnfnError
from knfn.eventing.cloudevent import (
    Event,
    InvalidEvent,
    classify_reply,
    decode_header_value,
    encode_header_value,
    from_http,
    to_binary,
    to_structured,
)

REQUIRED_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "1234",
    "ce-source": "/mycontext",
    "ce-type": "com.example.someevent",
}
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def structured(doc: dict[str, Any]) -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **doc}
    ).encode()


def reason(headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        from_http(headers, body)
    return str(info.value)


# -- binary mode -----------------------------------------------------------------------------


def test_binary_headers_become_attributes_and_body_the_data() -> None:
    """ce-* headers (any case) are attributes, Content-Type is datacontenttype, body is data."""
    headers = {
        "Ce-Specversion": "1.0",
        "CE-ID": "1234",
        "ce-source": "/mycontext",
        "ce-type": "com.example.someevent",
        "ce-comexampleextension1": "value",
        "Content-Type": "application/json; charset=utf-8",
        "Host": "example.com",
    }
    event = from_http(headers, b'{"x": 1}')
    assert dict(event.attributes) == {
        "specversion": "1.0",
        "id": "1234",
        "source": "/mycontext",
        "type": "com.example.someevent",
        "comexampleextension1": "value",
        "datacontenttype": "application/json; charset=utf-8",
    }
    assert event.data == b'{"x": 1}'
    assert (event.id, event.source, event.type, event.specversion) == (
        "1234",
        "/mycontext",
        "com.example.someevent",
        "1.0",
    )


def test_binary_empty_body_is_no_data() -> None:
    """An empty body gives data None and no datacontenttype without a Content-Type."""
    event = from_http(REQUIRED_HEADERS, b"")
    assert event.data is None and event.datacontenttype is None


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro \u20ac \U0001f600"),
        ("lower%e2%82%acok", "lower\u20acok"),
        ("%41%42C", "ABC"),
        ('"quoted value"', "quoted value"),
        ('"back\\"slash"', 'back"slash'),
        ("100%", "100%"),
        ("50%zz", "50%zz"),
        ("  padded  ", "padded"),
    ],
)
def test_header_values_are_unquoted_and_percent_decoded(raw: str, value: str) -> None:
    """Header values: double quotes removed, one round of percent-decoding, case-blind hex."""
    assert decode_header_value(raw) == value


@pytest.mark.parametrize("raw", ["%C0%A0", "%FF", "%E2%82"])
def test_percent_escapes_that_are_not_utf8_are_refused(raw: str) -> None:
    """Overlong or truncated UTF-8 in percent-escapes is an invalid event naming the header."""
    with pytest.raises(ValueError):
        decode_header_value(raw)
    assert "header ce-ext" in reason({**REQUIRED_HEADERS, "ce-ext": raw}, b"")


def test_encoding_escapes_space_quote_percent_and_non_ascii() -> None:
    """Space, ", % and everything outside printable ASCII become upper-case UTF-8 escapes."""
    assert encode_header_value('a b"c%d\u20ac\t~!') == "a%20b%22c%25d%E2%82%AC%09~!"


@pytest.mark.parametrize(
    ("header", "mentions"),
    [
        ("ce-Foo_Bar", "header ce-Foo_Bar: attribute name 'foo_bar' is invalid"),
        ("ce-my-ext", "attribute name 'my-ext' is invalid"),
        ("ce-", "attribute name '' is invalid"),
        ("ce-data", "'data' is reserved"),
    ],
)
def test_attribute_names_outside_lowercase_alphanumerics_are_invalid(
    header: str, mentions: str
) -> None:
    """Header names are lowercased, then must be a-z0-9 only."""
    assert mentions in reason({**REQUIRED_HEADERS, header: "x"}, b"")


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_each_missing_required_attribute_is_named(name: str) -> None:
    """A missing required attribute is reported with its header."""
    headers = {k: v for k, v in REQUIRED_HEADERS.items() if k != f"ce-{name}"}
    assert f"missing required attribute '{name}' (header ce-{name})" in reason(headers, b"")


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_an_empty_required_attribute_is_named(name: str) -> None:
    """A required attribute that is empty or blank is reported."""
    headers = {**REQUIRED_HEADERS, f"ce-{name}": "%20"}
    assert f"attribute '{name}' must not be empty" in reason(headers, b"")


def test_all_problems_are_reported_at_once() -> None:
    """Every problem of one request is in the one error, which is a KnfnError and ValueError."""
    with pytest.raises(InvalidEvent) as info:
        from_http({"ce-specversion": "1.0", "ce-Bad_Name": "x"}, b"")
    assert len(info.value.problems) == 4
    assert isinstance(info.value, KnfnError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("version", ["2.0", "0.2", "1", ""])
def test_only_specversions_1_0_and_0_3_are_accepted(version: str) -> None:
    """Any other specversion is named as unknown."""
    message = reason({**REQUIRED_HEADERS, "ce-specversion": version}, b"")
    assert f"unknown specversion {version!r}" in message


# -- CloudEvents 0.3, passed through as the Go SDK does (sdk-go v2/event/eventcontext_v03.go) --

V03 = {**REQUIRED_HEADERS, "ce-specversion": "0.3"}


def test_a_0_3_binary_event_is_read_and_written_as_0_3() -> None:
    """A 0.3 event keeps its specversion and schemaurl in both modes: nothing is converted."""
    headers = {**V03, "ce-schemaurl": "http://x/s", "Content-Type": "text/plain"}
    event = from_http(headers, b"hi")
    assert event.specversion == "0.3" and event.attributes["schemaurl"] == "http://x/s"
    out, body = to_binary(event)
    assert out["ce-specversion"] == "0.3" and body == b"hi"
    assert from_http(*to_structured(event)) == event


def test_a_0_3_structured_event_with_datacontentencoding_base64_has_decoded_data() -> None:
    """0.3 JSON format: "datacontentencoding": "base64" makes "data" base64 text; written back
    structured, binary data goes out the same way (0.3 has no data_base64)."""
    doc = {"specversion": "0.3", "id": "1", "source": "/s", "type": "t",
           "datacontenttype": "application/octet-stream", "datacontentencoding": "base64",
           "data": base64.b64encode(b"\x00\xff").decode()}  # fmt: skip
    event = from_http(STRUCTURED, json.dumps(doc).encode())
    assert event.data == b"\x00\xff" and "datacontentencoding" not in event.attributes
    _, body = to_structured(event)
    written = json.loads(body)
    assert written["datacontentencoding"] == "base64" and "data_base64" not in written
    assert written["data"] == doc["data"]
    assert from_http(*to_structured(event)) == event


@pytest.mark.parametrize(
    ("headers", "body", "mentions"),
    [
        ({**V03, "ce-schemaurl": " "}, b"", "'schemaurl'"),
        ({**V03, "ce-datacontentencoding": "gzip"}, b"", "only 'base64'"),
        (
            STRUCTURED,
            b'{"specversion":"0.3","id":"1","source":"/s","type":"t",'
            b'"datacontentencoding":"base64","data":"***"}',
            '"data" is not base64',
        ),
    ],
)
def test_0_3_rules(headers: dict[str, str], body: bytes, mentions: str) -> None:
    """0.3's own checks: schemaurl non-empty, datacontentencoding only base64 (and then the
    data must be base64)."""
    assert mentions in reason(headers, body)


def test_a_request_without_cloudevent_headers_is_not_a_cloudevent() -> None:
    """A plain POST gets one sentence saying what a CloudEvent needs."""
    message = reason({"Content-Type": "application/json"}, b"{}")
    assert message.startswith("not a CloudEvent: binary mode needs the headers ce-specversion")


@pytest.mark.parametrize(
    ("header", "value", "mentions"),
    [
        ("ce-time", "yesterday", "attribute 'time': 'yesterday' is not an RFC 3339 timestamp"),
        ("ce-time", "2018-02-30T00:00:00Z", "is not an RFC 3339 timestamp"),
        ("ce-time", "2018-04-05 17:31:00Z", "is not an RFC 3339 timestamp"),
        ("ce-subject", "", "attribute 'subject', when present, must not be empty"),
        ("Content-Type", "not a media type", "'datacontenttype': 'not a media type'"),
    ],
)
def test_optional_attributes_are_checked_when_present(
    header: str, value: str, mentions: str
) -> None:
    """time is RFC 3339, subject non-empty, datacontenttype a media type."""
    assert mentions in reason({**REQUIRED_HEADERS, header: value}, b"x")


@pytest.mark.parametrize(
    "time", ["2018-04-05T17:31:00Z", "2018-04-05T17:31:00.123456789+02:00", "1990-12-31t23:59:60z"]
)
def test_rfc3339_times_are_accepted(time: str) -> None:
    """Fractions, offsets, lowercase t/z and a leap second are valid RFC 3339."""
    assert from_http({**REQUIRED_HEADERS, "ce-time": time}, b"").attributes["time"] == time


def test_batched_mode_is_refused() -> None:
    """application/cloudevents-batch+json is refused saying batched mode is not supported."""
    message = reason({"Content-Type": "application/cloudevents-batch+json"}, b"[]")
    assert "batched mode" in message and "is not supported" in message


# -- structured mode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json",
        "Application/CloudEvents+JSON; charset=UTF-8",
        "application/cloudevents+json ; charset=utf-8",
    ],
)
def test_structured_mode_is_chosen_by_content_type(content_type: str) -> None:
    """The structured media type is recognised in any case and with parameters."""
    event = from_http({"Content-Type": content_type}, structured({"data": {"a": 1}}))
    assert event.data == b'{"a":1}' and event.datacontenttype == "application/json"


def test_structured_ignores_ce_headers() -> None:
    """In structured mode the attributes come from the body only."""
    headers = {**STRUCTURED, "ce-id": "from-header", "ce-extra": "x"}
    event = from_http(headers, structured({}))
    assert event.id == "1" and "extra" not in event.attributes


@pytest.mark.parametrize(
    ("doc", "attribute", "text"),
    [
        ({"comexampleothervalue": 5}, "comexampleothervalue", "5"),
        ({"flag": True}, "flag", "true"),
        ({"flag": False}, "flag", "false"),
        ({"negative": -12}, "negative", "-12"),
        ({"whole": 3.0}, "whole", "3"),
    ],
)
def test_structured_integers_and_booleans_become_canonical_strings(
    doc: dict[str, Any], attribute: str, text: str
) -> None:
    """Non-string attribute values are stored in their canonical string form."""
    assert from_http(STRUCTURED, structured(doc)).attributes[attribute] == text


def test_structured_null_attributes_are_unset() -> None:
    """A null member is an omitted attribute."""
    event = from_http(STRUCTURED, structured({"subject": None, "time": None}))
    assert "subject" not in event.attributes and "time" not in event.attributes


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"not json", "structured event: the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object, not an array"),
        (b'"text"', "the body must be a JSON object, not a string"),
        (b"\xff\xfe{}", "the body is not UTF-8"),
        (b'{"specversion": NaN}', "the body is not JSON"),
        (structured({"ext": {"a": 1}}), "attribute 'ext': must be a string, an integer or a bool"),
        (structured({"ext": [1]}), "not an array"),
        (structured({"ext": 1.5}), "not a number with a fraction"),
        (structured({"Ext": "x"}), "member \"Ext\": attribute name 'Ext' is invalid"),
        (structured({"data": 1, "data_base64": "AQ=="}), 'both "data" and "data_base64"'),
        (structured({"data_base64": "not base64!"}), '"data_base64" is not base64'),
        (structured({"data_base64": 12}), '"data_base64" is not base64'),
        (json.dumps({"id": "1", "source": "/s", "type": "t"}).encode(), "'specversion'"),
    ],
)
def test_structured_problems_are_named(body: bytes, mentions: str) -> None:
    """Unparsable bodies, object or array attribute values, both data members are refused."""
    assert mentions in reason(STRUCTURED, body)


@pytest.mark.parametrize(
    ("doc", "data", "content_type"),
    [
        ({"data": {"a": [1, 2], "b": "\u00e9"}}, '{"a":[1,2],"b":"\u00e9"}'.encode(), None),
        (
            {"datacontenttype": "application/vnd.api+json", "data": [1, "x"]},
            b'[1,"x"]',
            "application/vnd.api+json",
        ),
        ({"data": "I'm just a string"}, b'"I\'m just a string"', None),
        ({"datacontenttype": "text/plain", "data": "hello"}, b"hello", "text/plain"),
        (
            {"datacontenttype": "application/xml", "data": '<much wow="xml"/>'},
            b'<much wow="xml"/>',
            "application/xml",
        ),
        ({"data_base64": "eyAieHl6IjogMTIzIH0="}, b'{ "xyz": 123 }', None),
        ({"data_base64": "AAEC\n/w=="}, b"\x00\x01\x02\xff", None),
        ({"data": None}, None, None),
    ],
)
def test_structured_data_to_bytes(
    doc: dict[str, Any], data: bytes | None, content_type: str | None
) -> None:
    """JSON data is compact JSON, implying application/json; text data is UTF-8; base64 decoded."""
    event = from_http(STRUCTURED, structured(doc))
    assert event.data == data
    expected_type = content_type or ("application/json" if "data" in doc and data else None)
    assert event.datacontenttype == expected_type


# -- writing ---------------------------------------------------------------------------------


def test_to_binary_writes_ce_headers_and_content_type() -> None:
    """Every attribute but datacontenttype is a percent-encoded ce- header."""
    event = Event(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "note": "a b",
            "datacontenttype": "text/plain",
        },
        b"hello",
    )
    headers, body = to_binary(event)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "Content-Type": "text/plain",
        "ce-note": "a%20b",
    }
    assert body == b"hello"


@pytest.mark.parametrize(
    ("content_type", "data", "member", "value"),
    [
        ("application/json", b'{"a": 1}', "data", {"a": 1}),
        ("application/json", b"null", "data_base64", "bnVsbA=="),
        ("application/json", b"{broken", "data_base64", "e2Jyb2tlbg=="),
        ("text/plain; charset=utf-8", "caf\u00e9".encode(), "data", "caf\u00e9"),
        ("text/plain", b"\xff\xfe", "data_base64", "//4="),
        ("application/octet-stream", b"\x00", "data_base64", "AA=="),
        (None, b'{"a": 1}', "data_base64", "eyJhIjogMX0="),
    ],
)
def test_to_structured_chooses_data_or_data_base64(
    content_type: str | None, data: bytes, member: str, value: Any
) -> None:
    """JSON data as JSON, UTF-8 text/* as a string, anything else (or no type) as base64."""
    attributes = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    if content_type:
        attributes["datacontenttype"] = content_type
    headers, body = to_structured(Event(attributes, data))
    doc = json.loads(body)
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert doc[member] == value and ({"data", "data_base64"} - {member}).isdisjoint(doc)


def test_structured_hop_normalises_json_formatting() -> None:
    """JSON data survives a structured hop as the same JSON, compactly re-serialised."""
    event = from_http({**REQUIRED_HEADERS, "Content-Type": "application/json"}, b'{ "a" : 1 }')
    assert from_http(*to_structured(event)).data == b'{"a":1}'
    assert from_http(*to_binary(event)).data == b'{ "a" : 1 }'


# -- the Event value -------------------------------------------------------------------------


def test_events_compare_by_content_not_order() -> None:
    """Attribute order does not matter; empty data equals no data; events are hashable."""
    a = Event({"id": "1", "type": "t"}, b"")
    b = Event({"type": "t", "id": "1"}, None)
    assert a == b and hash(a) == hash(b) and a.data is None
    assert a != Event({"id": "1", "type": "t"}, b"x")


def test_replace_sets_and_removes_attributes() -> None:
    """replace() returns a new event; None removes an attribute; bad names are refused."""
    event = Event({"id": "1", "knativebrokerttl": "255"}, b"x")
    changed = event.replace(knativebrokerttl=None, knativearrivaltime="2024-01-01T00:00:00Z")
    assert dict(changed.attributes) == {"id": "1", "knativearrivaltime": "2024-01-01T00:00:00Z"}
    assert changed.data == b"x" and "knativebrokerttl" in event.attributes
    with pytest.raises(InvalidEvent, match="Bad"):
        event.replace(Bad="x")


def test_attributes_cannot_be_changed_in_place() -> None:
    """The attribute mapping of an event is read-only, yet the event copies and pickles."""
    event = Event({"id": "1"}, b"x")
    with pytest.raises(TypeError):
        event.attributes["id"] = "2"  # type: ignore[index]
    assert copy.deepcopy(event) == event == pickle.loads(pickle.dumps(event))


# -- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "kind"),
    [
        ({}, b"", "empty"),
        ({"Content-Type": "text/plain"}, b"", "empty"),
        ({"Content-Type": "text/plain"}, b"ok", "invalid"),
        ({"Content-Type": "application/json"}, b'{"a": 1}', "invalid"),
        ({"ce-id": "1"}, b"", "empty"),
        (REQUIRED_HEADERS, b"", "event"),
        ({**REQUIRED_HEADERS, "Content-Type": "application/json"}, b"{}", "event"),
        ({"ce-specversion": "1.0"}, b"", "invalid"),
        (STRUCTURED, structured({"data": 1}), "event"),
        (STRUCTURED, b"{}", "invalid"),
        ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", "invalid"),
    ],
)
def test_classify_reply(headers: dict[str, str], body: bytes, kind: str) -> None:
    """Empty acknowledgement, a CloudEvent, or a failed delivery, as the broker filter decides."""
    got, event = classify_reply(headers, body)
    assert got == kind and (event is not None) == (kind == "event")


# -- round trips -----------------------------------------------------------------------------

_RESERVED = {"specversion", "id", "source", "type", "datacontenttype", "time", "subject", "data"}
_names = st.from_regex(r"[a-z][a-z0-9]{0,12}", fullmatch=True).filter(lambda n: n not in _RESERVED)
# NUL is refused (Postgres cannot store it): see the limit tests.
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
# Values made of the characters percent-encoding cares about, so that "%41" and quotes occur.
_tricky = st.text(st.sampled_from('%41Ff "\\\t\u20ac\x7f'), max_size=12)
_non_blank = (_text | _tricky).filter(lambda s: bool(s.strip()))
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)


def _compact(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


_payloads = st.one_of(
    st.tuples(st.none(), st.sampled_from([None, "application/json", "text/plain"])),
    st.tuples(
        st.binary(max_size=64),
        st.sampled_from([None, "application/octet-stream", "image/png", "text/plain"]),
    ),
    st.tuples(
        _json_values.map(_compact),
        st.sampled_from(["application/json", "application/vnd.api+json", "text/json"]),
    ),
    st.tuples(_text.map(str.encode), st.sampled_from(["text/plain; charset=utf-8", "text/csv"])),
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    attributes = {
        "specversion": "1.0",
        "id": draw(_non_blank),
        "source": draw(_non_blank),
        "type": draw(_non_blank),
    }
    if draw(st.booleans()):
        attributes["subject"] = draw(_non_blank)
    if draw(st.booleans()):
        attributes["time"] = draw(
            st.sampled_from(["2018-04-05T17:31:00Z", "2024-02-29T23:59:59.5-07:00"])
        )
    attributes.update(draw(st.dictionaries(_names, _text | _tricky, max_size=5)))
    data, content_type = draw(_payloads)
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return Event(attributes, data)


@settings(max_examples=300)
@given(events())
def test_binary_round_trip(event: Event) -> None:
    """from_http(*to_binary(e)) == e, including values that need percent-encoding."""
    assert from_http(*to_binary(event)) == event


@settings(max_examples=300)
@given(events())
def test_structured_round_trip(event: Event) -> None:
    """from_http(*to_structured(e)) == e for bytes, JSON and text data."""
    assert from_http(*to_structured(event)) == event


@given(events())
def test_binary_headers_are_printable_ascii(event: Event) -> None:
    """Every ce- header value written is printable ASCII without spaces or quotes."""
    headers, _ = to_binary(event)
    for name, value in headers.items():
        if name.startswith("ce-"):
            assert all("!" <= c <= "~" and c != '"' for c in value)


def test_base64_data_decodes_to_the_same_bytes() -> None:
    """A binary payload survives structured mode exactly."""
    payload = bytes(range(256))
    event = Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, payload)
    doc = json.loads(to_structured(event)[1])
    assert base64.b64decode(doc["data_base64"]) == payload
