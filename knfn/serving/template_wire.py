"""The control channel between knfn and a revision's template process, as pure functions.

One message per datagram of a ``SOCK_SEQPACKET`` socket pair (so no framing), a JSON object with
a ``type`` (control_wire.py). knfn sends ``Fork`` with two file descriptors attached (the child's
output pipe and its ready pipe); the template answers ``Ready`` or ``Failed`` once after start,
``Forked`` or ``ForkFailed`` per request, and ``Exited`` whenever it reaps a child.

A forked child is a whole replica from the start: it inherits the template's environment, which
is the revision's replica environment without the values that differ per replica, and ``Fork``
carries those (``EnvDelta``: its PORT), so the child binds and starts its server and worker at
once, ahead of need when it is a revision's spare. Only ``PER_REPLICA`` keys may differ: anything
else means the template was built for another environment, whose values the function may have
read at import.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

from knfn.serving import control_wire
from knfn.serving.control_wire import Exited as Exited  # messages of this channel too
from knfn.serving.control_wire import Failed as Failed

# Values that differ from one replica of a revision to the next (the runtime contract's PORT).
PER_REPLICA = frozenset({"PORT"})
MAX_MESSAGE = control_wire.MAX_MESSAGE


class WireError(ValueError):
    """A control message that cannot be decoded; names what was wrong."""


@dataclass(frozen=True)
class EnvDelta:
    """What to change in the template's environment to get one replica's."""

    set: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.set) | frozenset(self.unset)


def env_delta(base: Mapping[str, str], target: Mapping[str, str]) -> EnvDelta:
    """The changes that turn base into target."""
    changed = {k: v for k, v in target.items() if base.get(k) != v}
    return EnvDelta(changed, tuple(sorted(k for k in base if k not in target)))


def apply_delta(environ: MutableMapping[str, str], delta: EnvDelta) -> None:
    for key in delta.unset:
        environ.pop(key, None)
    environ.update(delta.set)


def template_env(replica_env: Mapping[str, str]) -> dict[str, str]:
    """A template's environment: a replica's without the per-replica values."""
    return {k: v for k, v in replica_env.items() if k not in PER_REPLICA}


@dataclass(frozen=True)
class Fork:
    """knfn -> template: fork a child that serves with this environment (fds attached: its
    output pipe, its ready pipe)."""

    id: int
    delta: EnvDelta = field(default_factory=EnvDelta)


@dataclass(frozen=True)
class Ready:
    """template -> knfn: imported, app built, waiting for forks."""

    pid: int


@dataclass(frozen=True)
class Forked:
    id: int
    pid: int


@dataclass(frozen=True)
class ForkFailed:
    id: int
    reason: str


Message = Fork | Ready | Failed | Forked | ForkFailed | Exited
_TYPES: dict[str, type[Message]] = {
    t.__name__: t for t in (Fork, Ready, Failed, Forked, ForkFailed, Exited)
}


def encode(message: Message) -> bytes:
    body = asdict(message)
    if isinstance(message, Fork):
        body["delta"] = {"set": dict(message.delta.set), "unset": list(message.delta.unset)}
    return control_wire.encode(message, WireError, body)


def decode(data: bytes) -> Message:
    return control_wire.decode(
        data, _TYPES, WireError, _CHECKS, {"EnvDelta": _delta}, channel="control"
    )


_CHECKS = {"int": control_wire.is_int, "str": control_wire.is_str}


def _delta(raw: Any) -> EnvDelta:
    if not isinstance(raw, dict):
        raise WireError(f"Fork message: delta must be an object, not {raw!r}")
    sets, unset = raw.get("set", {}), raw.get("unset", [])
    if not (isinstance(sets, dict) and all(isinstance(v, str) for v in sets.values())):
        raise WireError(f"Fork message: delta.set must map names to strings: {sets!r}")
    if not (isinstance(unset, list) and all(isinstance(k, str) for k in unset)):
        raise WireError(f"Fork message: delta.unset must be a list of names: {unset!r}")
    return EnvDelta(sets, tuple(unset))
