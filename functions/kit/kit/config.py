"""Typed settings from environment variables, with every problem reported at once.

A component declares its settings as a frozen dataclass whose fields say, in their
annotation, which variable they come from; a field whose type is itself such a dataclass is
a group read from the same environment::

    @dataclass(frozen=True)
    class Settings:
        bucket: Annotated[str, config.env("S3_BUCKET", default="uploads")]
        max_bytes: Annotated[int, config.env("INGEST_MAX_BYTES", config.integer(min=1))]
        s3: S3Settings

and builds it once, at the edge, with `config.load(Settings)` (or `load(Settings, {...})` in a
test). Every missing or invalid variable, in every group, is collected into one `ConfigError`,
so a misconfigured process says everything that is wrong in its first and only log line.

An empty value counts as unset: Kubernetes renders an absent ConfigMap key as "".
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kit.errors import KitError

S = TypeVar("S")


class _Missing:
    """Marks a setting without a default, i.e. a required one."""

    def __repr__(self) -> str:
        return "<required>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Env:
    """One environment variable: its name, how to parse it, and its default if any."""

    name: str
    parse: Callable[[str], Any] = str
    default: Any = MISSING
    secret: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is MISSING


@dataclass(frozen=True)
class Problem:
    """What is wrong with one variable. `value` is None when the variable is not set."""

    name: str
    reason: str
    value: str | None = None

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.name} {self.reason}"
        return f"{self.name}={self.value!r}: {self.reason}"


class ConfigError(KitError, ValueError):
    """Raised by `load` with every problem found; the message names each variable."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        message = "invalid configuration: " + "; ".join(str(p) for p in self.problems)
        super().__init__(message, problems=[str(p) for p in self.problems])


def env(
    name: str,
    parse: Callable[[str], Any] = str,
    *,
    default: Any = MISSING,
    secret: bool = False,
    doc: str = "",
) -> Env:
    """Declare (inside `Annotated[...]`) that a field is read from `name`, parsed by `parse`.

    Without `default` the variable is required. A `secret` value is never echoed in errors.
    """
    return Env(name=name, parse=parse, default=default, secret=secret, doc=doc)


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build `cls` from `environ` (default: the process environment).

    Raises `ConfigError` listing every missing or invalid variable. A settings class may
    define `problems(self) -> list[Problem]` to check relations between its fields.
    """
    source = os.environ if environ is None else environ
    problems: list[Problem] = []
    settings = _build(cls, source, problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def variables(cls: type[Any]) -> Iterator[Env]:
    """Every variable `cls` reads, groups included, in declaration order."""
    for _, spec in _specs(cls):
        if isinstance(spec, Env):
            yield spec
        else:
            yield from variables(spec)


def _specs(cls: type[Any]) -> Iterator[tuple[str, Env | type[Any]]]:
    """(field name, its Env or its group class) for each field of a settings dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        specs = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Env)]
        if specs:
            yield field.name, specs[0]
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield field.name, hint
        else:
            raise TypeError(f"{cls.__name__}.{field.name} needs Annotated[..., env(...)]")


def _build(cls: type[S], source: Mapping[str, str], problems: list[Problem]) -> S | None:
    values: dict[str, Any] = {}
    found = len(problems)
    for name, spec in _specs(cls):
        if isinstance(spec, Env):
            values[name] = _read(spec, source, problems)
        else:
            values[name] = _build(spec, source, problems)
    if len(problems) > found:
        return None
    settings = cls(**values)
    check = getattr(settings, "problems", None)
    if callable(check):
        problems.extend(check())
    return settings


def _read(spec: Env, source: Mapping[str, str], problems: list[Problem]) -> Any:
    raw = source.get(spec.name)
    if raw is None or raw == "":
        if spec.required:
            problems.append(Problem(spec.name, "is required but not set"))
            return None
        return spec.default
    try:
        return spec.parse(raw)
    except (ValueError, TypeError) as error:
        shown = "<secret>" if spec.secret else raw
        problems.append(Problem(spec.name, str(error) or "is invalid", shown))
        return None


# Parsers: each takes the raw string and returns the value or raises ValueError(reason).


def integer(*, min: int | None = None, max: int | None = None) -> Callable[[str], int]:
    """An integer parser, optionally bounded (inclusive)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError("is not an integer") from None
        if min is not None and value < min:
            raise ValueError(f"must be at least {min}")
        if max is not None and value > max:
            raise ValueError(f"must be at most {max}")
        return value

    return parse


def string_set(raw: str) -> frozenset[str]:
    """A comma-separated list of non-empty items, lower-cased (e.g. media types)."""
    items = frozenset(item.strip().lower() for item in raw.split(",") if item.strip())
    if not items:
        raise ValueError("must list at least one comma-separated value")
    return items


def http_url(raw: str) -> str:
    """An absolute http(s) URL with a host."""
    parts = urllib.parse.urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    return raw.strip()


def boolean(raw: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def json_object(raw: str) -> dict[str, Any]:
    """A JSON object."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"is not valid JSON ({error.msg} at position {error.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def non_empty(raw: str) -> str:
    """Any string with something other than whitespace in it."""
    if not raw.strip():
        raise ValueError("must not be blank")
    return raw
