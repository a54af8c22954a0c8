"""The encoding both template control channels share, as pure functions.

A revision template's channel (template_wire.py) and the root template's (template_root_wire.py)
carry one message per datagram of a ``SOCK_SEQPACKET`` socket pair (so no framing): a frozen
dataclass as a JSON object of its fields and a ``type`` naming its class. Each channel names
its message classes, its error and how a field's value is checked; the rest is here, with the
two messages both servers send alike (``Failed``, ``Exited``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MAX_MESSAGE = 64 * 1024

M = TypeVar("M")
# Whether a field's value, as JSON gave it, is of the field's annotation.
Check = Callable[[Any], bool]
# A field's value as JSON gave it -> the value to build the message with; raises the
# channel's error, naming the field, when it cannot.
Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Failed:
    """server -> knfn, instead of its first message: it cannot fork (an import error, threads
    started at import)."""

    reason: str


@dataclass(frozen=True)
class Exited:
    """server -> knfn: a child was reaped; returncode as asyncio reports it (-N for signal N)."""

    pid: int
    returncode: int


def is_int(value: Any) -> bool:
    return type(value) is int  # a JSON true is not an int here


def is_str(value: Any) -> bool:
    return type(value) is str


def encode(
    message: DataclassInstance, error: type[ValueError], body: Mapping[str, Any] | None = None
) -> bytes:
    """message (a dataclass) as a datagram (body: its fields, when asdict's would not do);
    error when it is over MAX_MESSAGE, which a datagram must not be."""
    kind = type(message).__name__
    values = asdict(message) if body is None else body
    data = json.dumps({"type": kind, **values}, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise error(f"{kind} message of {len(data)} bytes > {MAX_MESSAGE}")
    return data


def decode(
    data: bytes,
    types: Mapping[str, type[M]],
    error: type[ValueError],
    checks: Mapping[str, Check],
    converts: Mapping[str, Convert] | None = None,
    channel: str = "control",
) -> M:
    """The message data encodes: its type one of types, each field's value passed by the check
    for its annotation (or made by its convert); error naming what was wrong otherwise."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{channel} message is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{channel} message is not an object: {data[:80]!r}")
    kind = types.get(str(raw.get("type")))
    if kind is None:
        raise error(f"{channel} message of unknown type: {data[:80]!r}")
    values: dict[str, Any] = {}
    for f in fields(kind):  # type: ignore[arg-type]
        if f.name not in raw:
            raise error(f"{kind.__name__} message without {f.name}: {data[:80]!r}")
        value, annotation = raw[f.name], str(f.type)
        if converts is not None and annotation in converts:
            value = converts[annotation](value)
        elif not checks[annotation](value):
            raise error(f"{kind.__name__} message: {f.name}={value!r} is not {annotation}")
        values[f.name] = value
    return kind(**values)
