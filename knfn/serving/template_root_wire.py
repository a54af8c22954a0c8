"""The control channel between knfn and the root template, as pure functions.

The root template (knfn/serving/template_root_main.py) imports the serving stack and the
functions' libraries once, then forks each revision's template from itself. Messages go one per
datagram of a ``SOCK_SEQPACKET`` socket pair, encoded as on a revision template's channel
(control_wire.py). knfn sends ``Spawn`` with two file descriptors attached (the new template's
end of its control socket, and its output pipe); the root answers
``Preloaded`` or ``Failed`` once after start, ``Spawned`` or ``SpawnFailed`` per request, and
``Exited`` whenever it reaps a template.

A forked template inherits what the root's start and imports made of the environment, so the
root reports the values those depended on (``Preloaded``): a revision whose environment differs
from the root's in a variable the interpreter reads at start, or in one a preloaded module read
at import, gets its template started on its own, as without a root (:func:`plan`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knfn.serving import control_wire
from knfn.serving.control_wire import Exited as Exited  # messages of this channel too
from knfn.serving.control_wire import Failed as Failed

MAX_MESSAGE = control_wire.MAX_MESSAGE
# Read by the interpreter as it starts (locale, encodings, paths, buffering, hashing) or by
# modules every process imports before the root's preloads (time: TZ).
STARTUP_PREFIXES = ("PYTHON", "LC_")
STARTUP_KEYS = frozenset({"LANG", "LANGUAGE", "HOME", "TZ"})
# In ``Preloaded.read``: a preload iterated the environment, so every variable counts.
ITERATED = "*"


class RootWireError(ValueError):
    """A root control message that cannot be decoded; names what was wrong."""


@dataclass(frozen=True)
class Spawn:
    """knfn -> root: fork a revision's template (fds attached: its control socket, its output)."""

    id: int
    script: str
    cwd: str
    env: dict[str, str]


@dataclass(frozen=True)
class Preloaded:
    """root -> knfn: imported, waiting for spawns; its environment as the interpreter started
    with it, and what its imports read of it (see :func:`plan`)."""

    pid: int
    modules: list[str]
    started: dict[str, str]
    read: dict[str, str | None]


@dataclass(frozen=True)
class Spawned:
    id: int
    pid: int


@dataclass(frozen=True)
class SpawnFailed:
    id: int
    reason: str


Message = Spawn | Preloaded | Failed | Spawned | SpawnFailed | Exited
_TYPES: dict[str, type[Message]] = {
    t.__name__: t for t in (Spawn, Preloaded, Failed, Spawned, SpawnFailed, Exited)
}


def startup_key(key: str) -> bool:
    return key in STARTUP_KEYS or key.startswith(STARTUP_PREFIXES)


@dataclass(frozen=True)
class Plan:
    """How a revision's template would be forked: its whole environment, or why not."""

    env: dict[str, str]
    conflicts: list[str]


def plan(
    given: Mapping[str, str],
    started: Mapping[str, str],
    read: Mapping[str, str | None],
    env: Mapping[str, str],
) -> Plan:
    """A template's environment env, forked from a root started with ``given`` (which the
    interpreter made ``started``: it adds LC_CTYPE when it coerces a C locale) whose imports
    read ``read`` (None: read and absent). The start-up variables must be those the root was
    given; the interpreter's additions are made as they would be; every variable read must have
    the value the root read (all of them, when the environment was iterated)."""
    full = {**{k: v for k, v in started.items() if k not in given}, **env}
    differ = {k for k in {*given, *env} if startup_key(k) and given.get(k) != env.get(k)}
    differ |= {k for k, v in read.items() if k != ITERATED and full.get(k) != v}
    if ITERATED in read:
        differ |= {k for k in {*started, *full} if started.get(k) != full.get(k)}
    return Plan(full, sorted(differ))


def encode(message: Message) -> bytes:
    return control_wire.encode(message, RootWireError)


def decode(data: bytes) -> Message:
    return control_wire.decode(data, _TYPES, RootWireError, _CHECKS, channel="root control")


def _all_str(values: Any, none: bool = False) -> bool:
    return all(type(x) is str or (none and x is None) for x in values)


_CHECKS: dict[str, control_wire.Check] = {
    "int": control_wire.is_int,
    "str": control_wire.is_str,
    "dict[str, str]": lambda v: isinstance(v, dict) and _all_str(v.values()),
    "dict[str, str | None]": lambda v: isinstance(v, dict) and _all_str(v.values(), none=True),
    "list[str]": lambda v: isinstance(v, list) and _all_str(v),
}
