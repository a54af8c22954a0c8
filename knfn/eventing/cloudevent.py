"""CloudEvents 1.0 over HTTP, as the broker reads and writes them: pure functions, no web framework.

An :class:`Event` is its context attributes and extensions as strings (the form they take in
binary mode) plus the data as bytes. Where each rule comes from (cloudevents/spec):

* Mode by ``Content-Type`` (``cloudevents/bindings/http-protocol-binding.md`` 3.1, 3.2):
  ``application/cloudevents+json`` is structured, ``application/cloudevents-batch+json`` is
  batched (refused here, as the broker ingress answers 400), anything else is binary.
* Binary mode: every attribute but ``datacontenttype`` travels as a ``ce-<name>`` header whose
  value is percent-encoded (space, ``"``, ``%`` and everything outside printable ASCII, as UTF-8
  bytes; 3.1.3.2); ``Content-Type`` is ``datacontenttype``; the body is the data. On reading, a
  double-quoted header value is unquoted first, and percent-escapes that are not UTF-8 are refused.
* Structured mode (``cloudevents/formats/json-format.md``): attributes are top-level members,
  the data is ``data`` (a JSON value when ``datacontenttype`` is JSON, ``*/json`` or ``*/*+json``,
  or absent, which implies ``application/json``; a string otherwise, though other JSON there is
  kept as its JSON text) or ``data_base64``, never both. A ``null`` member is an unset
  attribute, and ``"data": null`` is read as no data.
* Required attributes and their constraints (``cloudevents/spec.md``; the checks the Go SDK
  makes in ``event/eventcontext_v1.go``): ``id``, ``source``, ``type`` non-empty,
  ``specversion`` ``1.0``; ``subject``, ``dataschema``, ``datacontenttype`` non-empty when
  present; ``time`` an RFC 3339 timestamp; names of lowercase a-z and 0-9.
* CloudEvents 0.3 is read and written as 0.3, never converted: the broker ingress is built on
  the Go SDK, which reads a 0.3 event into a 0.3 context and writes it back so
  (sdk-go ``v2/binding/spec/spec.go``, ``event/eventcontext_v03.go``). Its differences from
  1.0 that matter here: ``schemaurl`` (not ``dataschema``) is non-empty when present, and in
  structured mode ``"datacontentencoding": "base64"`` says that ``data`` is base64 text
  (there is no ``data_base64``; ``event/event_unmarshal.go``, ``event_marshal.go``); the
  attribute describes the JSON member only, so it is dropped once the data is decoded and
  written again when a 0.3 event with binary data goes out structured.

Limits (:func:`~knfn.eventing.event_values.check_limits`, applied by :func:`from_http`) keep
every accepted event storable, deliverable and dead-letterable: see event_values.py.

Two things are normalised, so that ``from_http(*to_binary(e)) == e`` and
``from_http(*to_structured(e)) == e`` hold: an empty body is no data (``data`` is then None),
and structured mode carries JSON data as a JSON value, re-serialised compactly, so formatting
whitespace in JSON data does not survive a structured hop (binary mode keeps the bytes).

A subscriber's reply is classified as the broker filter does
(knative/eventing ``pkg/broker/filter/filter_handler.go`` writeResponse): a message is meant as
an event when it has a CloudEvents ``Content-Type`` or a ``ce-specversion`` header; otherwise
an empty body is a plain acknowledgement and any other body is a failed delivery.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from knfn.errors import KnfnError

# The rules for one value at a time (event_values.py), importable from here.
from knfn.eventing.event_values import MAX_ATTRIBUTE_BYTES as MAX_ATTRIBUTE_BYTES
from knfn.eventing.event_values import MAX_ATTRIBUTES as MAX_ATTRIBUTES
from knfn.eventing.event_values import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from knfn.eventing.event_values import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from knfn.eventing.event_values import check_json as check_json
from knfn.eventing.event_values import check_limits as check_limits
from knfn.eventing.event_values import decode_header_value as decode_header_value
from knfn.eventing.event_values import encode_header_value as encode_header_value
from knfn.eventing.event_values import is_json_media_type as is_json_media_type
from knfn.eventing.event_values import is_rfc3339 as is_rfc3339
from knfn.eventing.event_values import json_depth as json_depth
from knfn.eventing.event_values import media_type

SPECVERSION = "1.0"
SPECVERSION_03 = "0.3"
REQUIRED = ("specversion", "id", "source", "type")
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
STRUCTURED_CONTENT_TYPE = f"{STRUCTURED}; charset=utf-8"

ReplyKind = Literal["empty", "event", "invalid"]

_NAME = re.compile(r"[a-z0-9]+")
# A media type as RFC 2045 spells it: token "/" token, then optional parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}\s*(;.*)?", re.DOTALL)
# Attributes that, when present, must not be empty (spec.md; the Go SDK's Validate).
_NON_EMPTY_WHEN_PRESENT = ("subject", "dataschema", "datacontenttype")
_NON_EMPTY_WHEN_PRESENT_03 = ("subject", "schemaurl", "datacontenttype")
_ENCODING_03 = "datacontentencoding"


class InvalidEvent(KnfnError, ValueError):
    """Not a valid CloudEvent; the message gives every reason, naming the attribute or header."""

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, eq=False)
class Event:
    """One CloudEvent: every context attribute and extension as a string, and the data bytes.

    ``datacontenttype`` is an attribute like the others. An empty ``data`` is stored as None.
    Two events are equal when their attributes (in any order) and data are equal.
    """

    attributes: Mapping[str, str]
    data: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))
        object.__setattr__(self, "data", bytes(self.data) if self.data else None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return dict(self.attributes) == dict(other.attributes) and self.data == other.data

    def __hash__(self) -> int:
        return hash((frozenset(self.attributes.items()), self.data))

    def __repr__(self) -> str:
        return f"Event(attributes={dict(self.attributes)!r}, data={self.data!r})"

    def __reduce__(self) -> tuple[type[Event], tuple[dict[str, str], bytes | None]]:
        # The read-only mapping cannot be pickled or deep-copied; rebuild from a plain dict.
        return Event, (dict(self.attributes), self.data)

    @property
    def id(self) -> str:
        return self.attributes.get("id", "")

    @property
    def source(self) -> str:
        return self.attributes.get("source", "")

    @property
    def type(self) -> str:
        return self.attributes.get("type", "")

    @property
    def specversion(self) -> str:
        return self.attributes.get("specversion", "")

    @property
    def datacontenttype(self) -> str | None:
        return self.attributes.get("datacontenttype")

    def replace(self, **changes: str | None) -> Event:
        """A copy with these attributes set; None removes one."""
        bad = [name for name in changes if not _NAME.fullmatch(name)]
        if bad:
            raise InvalidEvent(*(_bad_name(name, f"attribute {name!r}") for name in bad))
        attributes = dict(self.attributes)
        for name, value in changes.items():
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = value
        return Event(attributes, self.data)


# -- reading ---------------------------------------------------------------------------------


def from_http(headers: Mapping[str, str], body: bytes) -> Event:
    """The CloudEvent in an HTTP request or response; InvalidEvent says everything that is wrong."""
    content_type = _header(headers, "content-type")
    media = media_type(content_type)
    if media == BATCH:
        raise InvalidEvent(
            f"batched mode ({BATCH}) is not supported: send one event per request, "
            f"in binary mode or as {STRUCTURED}"
        )
    if media == STRUCTURED:
        attributes, data, problems = _read_structured(body)
        where = _member
    else:
        attributes, data, problems = _read_binary(headers, content_type, body)
        if not problems and attributes.keys() <= {"datacontenttype"}:
            raise InvalidEvent(
                "not a CloudEvent: binary mode needs the headers ce-specversion, ce-id, "
                f"ce-source and ce-type; structured mode needs Content-Type {STRUCTURED}"
            )
        where = _ce_header
    problems += _validate(attributes, where)
    problems += check_limits(attributes, data)
    if problems:
        raise InvalidEvent(*problems)
    return Event(attributes, data)


def classify_reply(headers: Mapping[str, str], body: bytes) -> tuple[ReplyKind, Event | None]:
    """A subscriber's 2xx answer: ("empty", None), ("event", the event) or ("invalid", None).

    As the broker filter decides (pkg/broker/filter/filter_handler.go writeResponse): a message
    with a CloudEvents Content-Type or a ce-specversion header must be a valid event; without
    either, an empty body is an acknowledgement and anything else is not a CloudEvent.
    """
    media = media_type(_header(headers, "content-type"))
    if media in (STRUCTURED, BATCH) or _header(headers, "ce-specversion") is not None:
        try:
            return "event", from_http(headers, body)
        except InvalidEvent:
            return "invalid", None
    return ("empty", None) if not body else ("invalid", None)


def _read_binary(
    headers: Mapping[str, str], content_type: str | None, body: bytes
) -> tuple[dict[str, str], bytes | None, list[str]]:
    attributes: dict[str, str] = {}
    problems: list[str] = []
    for key, raw in headers.items():  # a multidict yields repeated headers too
        lowered = key.lower()
        if not lowered.startswith("ce-"):
            continue
        name = lowered[3:]
        if not _NAME.fullmatch(name) or name == "data":
            problems.append(_bad_name(name, f"header {key}"))
            continue
        try:
            value = decode_header_value(raw)
        except ValueError:
            problems.append(f"header {key}: the value is not valid percent-encoded UTF-8 ({raw!r})")
            continue
        if name in attributes and attributes[name] != value:
            problems.append(f"header {key}: given twice with different values")
        attributes[name] = value
    if content_type is not None and content_type.strip():
        # Content-Type is datacontenttype in binary mode; a stray ce-datacontenttype loses to it.
        attributes["datacontenttype"] = content_type.strip()
    return attributes, body or None, problems


def _read_structured(body: bytes) -> tuple[dict[str, str], bytes | None, list[str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"structured event: the body is not UTF-8 ({exc.reason})") from None
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH + 1:  # the event object itself is one level
        raise InvalidEvent(
            f"structured event: JSON nested {depth} levels deep: "
            f"at most {MAX_JSON_DEPTH + 1} are accepted"
        )
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"structured event: the body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(
            f"structured event: the body must be a JSON object, not {_json_kind(doc)}"
        )
    attributes: dict[str, str] = {}
    problems: list[str] = []
    for name, value in doc.items():
        if name in ("data", "data_base64") or value is None:
            continue
        if not _NAME.fullmatch(name):
            problems.append(_bad_name(name, f'member "{name}"'))
            continue
        text_value = _attribute_text(value)
        if text_value is None:
            problems.append(
                f"attribute {name!r}: must be a string, an integer or a boolean, "
                f"not {_json_kind(value)}"
            )
            continue
        attributes[name] = text_value
    data: bytes | None = None
    has_data = doc.get("data") is not None
    base64_member = "data_base64"
    if attributes.get("specversion") == SPECVERSION_03 and _ENCODING_03 in attributes:
        encoding = attributes.pop(_ENCODING_03)
        if encoding != "base64":
            problems.append(
                f"attribute {_ENCODING_03!r}: {encoding!r} is not allowed: "
                "CloudEvents 0.3 allows only 'base64'"
            )
        base64_member, has_data = "data", False
    has_base64 = doc.get(base64_member) is not None
    if has_data and has_base64:
        problems.append('structured event: has both "data" and "data_base64"; give one')
    elif has_base64:
        encoded = doc[base64_member]
        try:
            if not isinstance(encoded, str):
                raise ValueError(f"not a string but {_json_kind(encoded)}")
            data = base64.b64decode(re.sub(r"[ \t\r\n]", "", encoded), validate=True)
        except (ValueError, binascii.Error) as exc:
            problems.append(f'structured event: "{base64_member}" is not base64 ({exc})')
    elif has_data:
        value = doc["data"]
        content_type = attributes.get("datacontenttype")
        if content_type is None:
            # json-format.md 3.1.2: no datacontenttype means application/json; say so, so that
            # a binary-mode hop gets the Content-Type right.
            attributes["datacontenttype"] = content_type = "application/json"
        if isinstance(value, str) and not is_json_media_type(content_type):
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                problems.append('structured event: "data" is not valid Unicode text')
        else:
            data = _compact_json(value)
    return attributes, data, problems


def _validate(attributes: Mapping[str, str], where: Callable[[str], str]) -> list[str]:
    problems: list[str] = []
    version = attributes.get("specversion")
    if version is None:
        problems.append(f"missing required attribute 'specversion' ({where('specversion')})")
    elif version not in (SPECVERSION, SPECVERSION_03):
        problems.append(f"unknown specversion {version!r}: only '1.0' and '0.3' are accepted")
    for name in ("id", "source", "type"):
        value = attributes.get(name)
        if value is None:
            problems.append(f"missing required attribute {name!r} ({where(name)})")
        elif not value.strip():
            problems.append(f"attribute {name!r} must not be empty ({where(name)})")
    non_empty = _NON_EMPTY_WHEN_PRESENT_03 if version == SPECVERSION_03 else _NON_EMPTY_WHEN_PRESENT
    for name in non_empty:
        value = attributes.get(name)
        if value is not None and not value.strip():
            problems.append(f"attribute {name!r}, when present, must not be empty")
    encoding = attributes.get(_ENCODING_03)
    if version == SPECVERSION_03 and encoding is not None and encoding.strip().lower() != "base64":
        # Binary mode; structured mode checked it already (eventcontext_v03.go Validate).
        problems.append(
            f"attribute {_ENCODING_03!r}: {encoding!r} is not allowed: "
            "CloudEvents 0.3 allows only 'base64'"
        )
    content_type = attributes.get("datacontenttype")
    if content_type and content_type.strip() and not _MEDIA_TYPE.fullmatch(content_type.strip()):
        problems.append(f"attribute 'datacontenttype': {content_type!r} is not a media type")
    time = attributes.get("time")
    if time is not None and not is_rfc3339(time):
        problems.append(f"attribute 'time': {time!r} is not an RFC 3339 timestamp")
    return problems


# -- writing ---------------------------------------------------------------------------------


def to_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body of the event in binary mode."""
    headers: dict[str, str] = {}
    for name, value in _ordered(event.attributes):
        if name == "datacontenttype":
            headers["Content-Type"] = value
        else:
            headers[f"ce-{name}"] = encode_header_value(value)
    return headers, event.data or b""


def to_structured(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body of the event in structured mode (the JSON event format)."""
    doc: dict[str, Any] = dict(_ordered(event.attributes))
    if event.specversion == SPECVERSION_03:
        doc.pop(_ENCODING_03, None)  # it would make a reader take "data" as base64
    data = event.data
    content_type = event.datacontenttype
    if data is not None:
        value = _MISSING
        if content_type is not None and is_json_media_type(content_type):
            value = _parse_json(data)
            if value is None:
                # A JSON null would read back as no data: carry those four bytes as base64.
                value = _MISSING
        elif content_type is not None and media_type(content_type).startswith("text/"):
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                value = _MISSING
        if value is _MISSING and event.specversion == SPECVERSION_03:
            doc[_ENCODING_03] = "base64"
            doc["data"] = base64.b64encode(data).decode("ascii")
        elif value is _MISSING:
            doc["data_base64"] = base64.b64encode(data).decode("ascii")
        else:
            doc["data"] = value
    return {"Content-Type": STRUCTURED_CONTENT_TYPE}, _json_bytes(doc, compact=False)


# -- helpers ---------------------------------------------------------------------------------


class _Missing:
    pass


_MISSING: Any = _Missing()


def _ce_header(name: str) -> str:
    return "Content-Type header" if name == "datacontenttype" else f"header ce-{name}"


def _member(name: str) -> str:
    return f'member "{name}"'


def _bad_name(name: str, where: str) -> str:
    if name == "data":
        return f"{where}: 'data' is reserved and cannot be an attribute name"
    return (
        f"{where}: attribute name {name!r} is invalid: "
        "CloudEvents attribute names use only lowercase letters a-z and digits 0-9"
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _attribute_text(value: Any) -> str | None:
    """A structured-mode attribute value in its canonical string form (None: not allowed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value  # a lone surrogate is refused by check_limits, naming the attribute
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "null"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes) -> Any:
    """The JSON value in data, or _MISSING when data is not UTF-8 JSON."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return _MISSING


def _compact_json(value: Any) -> bytes:
    return _json_bytes(value, compact=True)


def _json_bytes(value: Any, *, compact: bool) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    try:
        text = json.dumps(value, separators=separators, ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a \ud800 escape) has no UTF-8 form; keep it escaped.
        return json.dumps(value, separators=separators, allow_nan=False).encode("ascii")


def _ordered(attributes: Mapping[str, str]) -> list[tuple[str, str]]:
    """Required attributes first, the rest in name order: stable, readable output."""
    first = [(name, attributes[name]) for name in REQUIRED if name in attributes]
    rest = sorted((n, v) for n, v in attributes.items() if n not in REQUIRED)
    return first + rest
