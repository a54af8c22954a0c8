"""CloudEvent attribute values and data, one at a time: their HTTP header encoding, media
types, timestamps, and the limits that keep an accepted event storable and deliverable.

The wire format that uses them is cloudevent.py.

Limits (:func:`check_limits`, applied by cloudevent.from_http), so that nothing is accepted that
cannot be stored, delivered and dead-lettered: every attribute travels as one ``ce-<name>``
header line in binary mode, and the HTTP servers on the way (aiohttp's parser in the gateway,
gunicorn in a replica) refuse a field line over 8190 bytes and gunicorn more than 100 header
fields; a dead letter adds three more headers. So an attribute value is at most
``MAX_ATTRIBUTE_BYTES`` once percent-encoded, an event has at most ``MAX_ATTRIBUTES``
attributes, and no value holds a character Postgres text and jsonb cannot hold (NUL, a lone
surrogate). JSON (a structured body, or data whose ``datacontenttype`` is JSON) nests at most
``MAX_JSON_DEPTH`` deep (serde_json's default recursion limit; Python's json gives up near
1,000 levels, inside a subscriber less) and has no ``\u0000`` or lone-surrogate escape (jsonb
refuses both, and a dead-letter sink storing the data as jsonb would fail).
``datacontenttype`` goes out as a raw ``Content-Type`` header, so it must be printable ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from itertools import accumulate

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Limits that keep every accepted event deliverable and dead-letterable (module docstring).
MAX_ATTRIBUTE_BYTES = 4096  # a percent-encoded value; half of the 8190-byte header line limit
MAX_ATTRIBUTES = 64  # + the broker's own, the dead letter's 3, HTTP's: under gunicorn's 100
MAX_NAME_LENGTH = 64  # spec.md asks for at most 20; longer names are allowed but bounded
MAX_JSON_DEPTH = 128
# A JSON string escape that jsonb cannot hold: \u0000, or a surrogate escape not in a pair.
_JSON_BAD_ESCAPE = re.compile(
    r"(?<!\\)(?:\\\\)*"  # an unescaped backslash: preceded by pairs of backslashes only
    r"(?:\\u0000"
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # high, no low next
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # low, no high before
)
# A string, or an unterminated one to the end of the text. Possessive and never failing once
# it has begun at a quote, so re.sub scans the text once, left to right: the nested
# `(?:[^"\\]+|\\.)*"` this replaced backtracked exponentially on an unterminated string (one
# event hung the ingress), and a pattern that can fail would be retried at every later quote.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def check_limits(attributes: Mapping[str, str], data: bytes | None) -> list[str]:
    """Why these attributes and data could not be stored, delivered or dead-lettered ([] if ok).

    Each problem names the attribute; see the module docstring for where each limit comes from.
    """
    problems: list[str] = []
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(
            f"the event has {len(attributes)} attributes: at most {MAX_ATTRIBUTES} are accepted "
            "(each one is an HTTP header on delivery)"
        )
    for name, value in attributes.items():
        if len(name) > MAX_NAME_LENGTH:
            problems.append(
                f"attribute name {name[:32]!r}... is {len(name)} characters long: "
                f"at most {MAX_NAME_LENGTH} are accepted"
            )
        unstorable = _unstorable(value)
        if unstorable:
            problems.append(f"attribute {name!r} contains {unstorable}, which cannot be stored")
            continue
        # Percent-encoding makes at most 12 characters of one (4 UTF-8 bytes, 3 each): a short
        # value is within the bound without being encoded.
        if len(value) * 12 > MAX_ATTRIBUTE_BYTES:
            size = len(encode_header_value(value))
            if size > MAX_ATTRIBUTE_BYTES:
                problems.append(
                    f"attribute {name!r} is {size} bytes once percent-encoded for its HTTP "
                    f"header: at most {MAX_ATTRIBUTE_BYTES} are accepted"
                )
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not all(" " <= c <= "~" or c == "\t" for c in content_type):
        problems.append(
            "attribute 'datacontenttype' must be printable ASCII: it is sent as the "
            "Content-Type header"
        )
    if data is not None and content_type is not None and is_json_media_type(content_type):
        problems += check_json(data, "data")
    return problems


def check_json(text: bytes, what: str) -> list[str]:
    """Why JSON text could not be carried to a subscriber and stored as jsonb ([] if ok).

    Too deep a nesting, or an escape (``\\u0000``, a lone surrogate) that jsonb refuses.
    Anything else, including JSON that is not valid, is left to the reader.
    """
    problems: list[str] = []
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        problems.append(
            f"{what}: JSON nested {depth} levels deep: at most {MAX_JSON_DEPTH} are accepted"
        )
    bad = _JSON_BAD_ESCAPE.search(text.decode("utf-8", "replace"))
    if bad:
        escape = bad.group(0).lstrip("\\")
        problems.append(
            f"{what}: the JSON escape \\{escape} (NUL or a lone surrogate) cannot be stored"
        )
    return problems


def json_depth(text: bytes) -> int:
    """How deep the arrays and objects in JSON text nest (0 for a scalar), without parsing it.

    Strings are skipped, so brackets inside them do not count; linear in the text's length.
    """
    brackets = _JSON_STRING.sub(b"", text).translate(_BRACKETS, _NOT_BRACKETS)
    steps = (1 if b == 1 else -1 for b in brackets)
    return max(accumulate(steps), default=0)


def _unstorable(value: str) -> str | None:
    """What in an attribute value Postgres text and jsonb cannot hold, or None."""
    if "\x00" in value:
        return "a NUL character"
    if value.isascii():  # no surrogate to look for (the hot path)
        return None
    for char in value:
        if "\ud800" <= char <= "\udfff":
            return f"a lone surrogate (U+{ord(char):04X})"
    return None


# -- header values ---------------------------------------------------------------------------


def encode_header_value(value: str) -> str:
    """An attribute value as an HTTP header value (http-protocol-binding.md 3.1.3.2)."""
    # Most values are printable ASCII without space, '"' or '%': unchanged (the hot path).
    plain = value.isascii() and value.isprintable()
    if plain and " " not in value and '"' not in value and "%" not in value:
        return value
    out: list[str] = []
    for char in value:
        if "!" <= char <= "~" and char not in '"%':
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "replace"))
    return "".join(out)


def decode_header_value(raw: str) -> str:
    """The attribute value in a header: unquoted, percent-decoded, strict UTF-8 (ValueError)."""
    value = raw.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if "%" not in value:  # nothing to decode: the same bytes, checked as UTF-8 (the hot path)
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    out = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "%" and _HEX2.fullmatch(value, i + 1, i + 3):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            # A server that decoded raw header bytes with surrogateescape gets them back here.
            out += char.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8")


# -- media types and timestamps -----------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lowercased ("" when there is none)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str) -> bool:
    """Whether a datacontenttype declares JSON: ``*/json`` or ``*/*+json`` (json-format.md 3.1)."""
    subtype = media_type(content_type).rpartition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def is_rfc3339(text: str) -> bool:
    """Whether text is an RFC 3339 timestamp (date, 'T', time with seconds, zone)."""
    match = _RFC3339.fullmatch(text)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    sign, off_hours, off_minutes = match.group(8), match.group(9), match.group(10)
    try:
        # RFC 3339 allows a leap second (60), which datetime does not.
        datetime(year, month, day, hour, minute, min(second, 59))
        if sign is not None:
            timezone(timedelta(hours=int(off_hours), minutes=int(off_minutes)))
    except ValueError:
        return False
    return second <= 60 and (sign is None or int(off_minutes) < 60)
