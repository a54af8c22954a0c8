"""CloudEvents 1.0 over HTTP, as pure functions over an `HTTPMessage(headers, body)`.

Binary mode: attributes in `ce-<name>` headers with percent-encoded values, the data as the
body, `Content-Type` as `datacontenttype`. Structured mode: the whole event as JSON with
`Content-Type: application/cloudevents+json`. Batched mode is refused.

Parsing is done here rather than by the SDK's `from_http` for three reasons: header values are
percent-decoded (the HTTP binding requires it), data is decoded by its `datacontenttype`
(JSON only when it says JSON), and every problem gets a message that names the attribute or
header. Events are the SDK's `cloudevents.http.CloudEvent`, the type functions-framework users
know; a `time` the producer did not send is not invented.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent

from kit.errors import BadRequest

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCHED = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "specversion", "type")
_NAME = re.compile(r"^[a-z0-9]{1,}$")


class InvalidEvent(BadRequest):
    """The request does not carry a valid CloudEvent; the message says what is wrong."""


@dataclass(frozen=True)
class HTTPMessage:
    """An HTTP request or response as far as the binding cares: headers and body."""

    headers: Mapping[str, str]
    body: bytes


def encode_header_value(value: str) -> str:
    """Percent-encode space, `"`, `%` and everything outside printable ASCII (as UTF-8)."""
    out: list[str] = []
    for char in value:
        if "\x21" <= char <= "\x7e" and char not in '"%':
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_header_value(value: str) -> str:
    """Undo `encode_header_value`. A `%` not followed by two hex digits is kept as is.

    WSGI hands header values over as latin-1; a sender that put raw UTF-8 in a header (not
    allowed, but seen) is read as UTF-8 rather than as mojibake.
    """
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        value = value.encode("latin-1").decode("utf-8")
    return urllib.parse.unquote(value, errors="replace")


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether a content type says the data is JSON (application/json, text/json, *+json)."""
    kind = media_type(content_type)
    return kind in ("application/json", "text/json") or kind.endswith("+json")


def attribute_text(value: Any) -> str:
    """An attribute value as the string a header carries (true/false for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def encode_data(event: CloudEvent) -> tuple[bytes, str | None]:
    """The event's data as body bytes, and the content type that describes them."""
    content_type = event.get("datacontenttype")
    data = event.get_data()
    if data is None:
        return b"", content_type
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), content_type or "application/octet-stream"
    if isinstance(data, str) and not is_json(content_type):
        return data.encode("utf-8"), content_type or "text/plain; charset=utf-8"
    return json.dumps(data).encode("utf-8"), content_type or "application/json"


def to_binary(event: CloudEvent) -> HTTPMessage:
    """Binary mode: `ce-*` headers plus the data as the body."""
    body, content_type = encode_data(event)
    headers: dict[str, str] = {}
    for name, value in event.get_attributes().items():
        if name == "datacontenttype" or value is None:
            continue
        headers[f"ce-{name}"] = encode_header_value(attribute_text(value))
    if content_type:
        headers["content-type"] = content_type
    return HTTPMessage(headers=headers, body=body)


def to_structured(event: CloudEvent) -> HTTPMessage:
    """Structured mode: the event as one JSON document (bytes data as `data_base64`)."""
    document: dict[str, Any] = {
        name: value for name, value in event.get_attributes().items() if value is not None
    }
    data = event.get_data()
    if isinstance(data, (bytes, bytearray, memoryview)):
        document["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        document["data"] = data
    body = json.dumps(document, default=attribute_text).encode("utf-8")
    return HTTPMessage(headers={"content-type": f"{STRUCTURED}; charset=utf-8"}, body=body)


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Parse a binary or structured CloudEvent; `InvalidEvent` names what is wrong."""
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type")
    kind = media_type(content_type)
    if kind == BATCHED:
        raise InvalidEvent("batched CloudEvents are not supported", content_type=content_type)
    if kind == STRUCTURED:
        return _from_structured(body)
    if "ce-specversion" in lowered or any(name.startswith("ce-") for name in lowered):
        return _from_binary(lowered, body)
    raise InvalidEvent(
        "not a CloudEvent: no ce-* headers (binary mode) and Content-Type is not "
        f"{STRUCTURED} (structured mode)",
        content_type=content_type,
    )


def _from_binary(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    attributes: dict[str, Any] = {}
    for name, value in headers.items():
        if name.startswith("ce-"):
            attributes[name[3:]] = decode_header_value(value)
    content_type = headers.get("content-type")
    if content_type:
        attributes["datacontenttype"] = content_type
    _check_attributes(attributes, where="header ce-")
    return _event(attributes, _decode_body(body, content_type))


def _decode_body(body: bytes, content_type: str | None) -> Any:
    if not body:
        return None
    if is_json(content_type):
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as error:  # incl. JSONDecodeError, UnicodeError
            raise InvalidEvent(
                f"data is not valid JSON although datacontenttype is {content_type}: {error}"
            ) from None
    if media_type(content_type).startswith("text/"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body
    return body


def _from_structured(body: bytes) -> CloudEvent:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # incl. JSONDecodeError, UnicodeError
        raise InvalidEvent(f"structured CloudEvent is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("structured CloudEvent must be a JSON object")
    if "data" in document and "data_base64" in document:
        raise InvalidEvent("structured CloudEvent has both data and data_base64")
    data: Any = document.pop("data", None)
    if "data_base64" in document:
        encoded = document.pop("data_base64")
        try:
            data = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent("data_base64 is not valid base64") from None
    _check_attributes(document, where="attribute ")
    return _event(document, data)


def _check_attributes(attributes: Mapping[str, Any], *, where: str) -> None:
    problems: list[str] = []
    for name in REQUIRED:
        value = attributes.get(name)
        if value is None or value == "":
            problems.append(f"missing required {where}{name}")
        elif not isinstance(value, str):
            problems.append(f"{where}{name} must be a string")
    version = attributes.get("specversion")
    if isinstance(version, str) and version and version != SPECVERSION:
        problems.append(f"unsupported specversion {version!r} (only {SPECVERSION})")
    bad_names = sorted(name for name in attributes if not _NAME.match(name))
    if bad_names:
        problems.append(f"invalid attribute names {bad_names} (lowercase a-z0-9 only)")
    if problems:
        raise InvalidEvent("invalid CloudEvent: " + "; ".join(problems), problems=problems)


def _event(attributes: dict[str, Any], data: Any) -> CloudEvent:
    event = CloudEvent(attributes, data)
    if "time" not in attributes:
        # The SDK stamps "now" on events without a time; a received event must stay as sent.
        del event["time"]
    return event


def new_event(
    *,
    type: str,
    source: str,
    data: Any,
    subject: str | None = None,
    content_type: str | None = "application/json",
    **extensions: Any,
) -> CloudEvent:
    """A fresh event: uuid4 id, current time, specversion 1.0."""
    attributes: dict[str, Any] = {"type": type, "source": source, **extensions}
    if subject is not None:
        attributes["subject"] = subject
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data)
