"""Trigger filters: which events of a broker a Trigger's subscriber gets. Pure functions.

A :data:`Filter` is a predicate over an event's attributes (every context attribute and
extension, as strings). :func:`compile_trigger` turns a Trigger's ``spec`` into one, checking
its shape first, as Knative does (knative/eventing):

* ``spec.filters`` (``pkg/eventfilter/subscriptionsapi``), when it is a non-empty list, wins over
  ``spec.filter`` (``pkg/broker/filter/filter_handler.go`` filterEvent); its entries are ANDed.
  Each entry has exactly one dialect (``pkg/apis/eventing/v1/trigger_validation.go``
  ValidateOneOf): ``exact``, ``prefix``, ``suffix`` (attribute -> string, every pair must
  match, case-sensitive; a missing attribute never matches), ``all`` and ``any`` (lists of
  filters), ``not`` (one filter) and ``cesql`` (an expression).
* ``spec.filter.attributes`` (``pkg/eventfilter/attributes/filter.go``): every attribute named
  must be present and equal; an empty value asks for the attribute with any non-empty value.
* No filter at all matches every event.

Stricter than upstream, so that a typo cannot silently match everything: upstream ignores an
entry with no dialect and an ``exact``/``prefix``/``suffix`` with an empty value (the filter is
skipped, so it matches); here both are errors.

A ``cesql`` entry is parsed once, here, by :mod:`knfn.eventing.cesql` (CloudEvents SQL v1, as
the Go SDK Knative runs evaluates it); its syntax errors name the entry's field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from knfn.errors import KnfnError
from knfn.eventing.cesql import CesqlError, parse_cesql

Filter = Callable[[Mapping[str, str]], bool]
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")

# Filter keys must be attribute names starting with a letter (trigger_validation.go).
_FILTER_KEY = re.compile(r"[a-z][a-z0-9]*")


class FilterError(KnfnError, ValueError):
    """A Trigger's filter is malformed; the message names the field, e.g. spec.filters[1].cesql."""


def match_all(attributes: Mapping[str, str]) -> bool:
    """The filter of a Trigger without one: every event."""
    return True


def compile_trigger(spec: Mapping[str, Any]) -> Filter:
    """The filter of a Trigger's ``spec``: ``filters`` when non-empty, else ``filter``, else all."""
    raw_filters = spec.get("filters")
    filters: Filter | None = None
    if raw_filters is not None:
        if not isinstance(raw_filters, list):
            raise FilterError("spec.filters: must be a list of filters")
        if raw_filters:
            filters = _all(
                [_compile_filter(f, f"spec.filters[{i}]") for i, f in enumerate(raw_filters)]
            )
    # spec.filter is validated even when spec.filters wins, as the webhook does.
    attributes = _compile_attributes(spec.get("filter"))
    return filters or attributes


# -- spec.filter.attributes ------------------------------------------------------------------


def _compile_attributes(raw: Any) -> Filter:
    if raw is None:
        return match_all
    if not isinstance(raw, Mapping):
        raise FilterError("spec.filter: must be an object with attributes")
    # Unknown fields were refused when the manifests were read (knfn/schema.py).
    attributes = raw.get("attributes")
    if attributes is None:
        return match_all
    wanted = _string_map(attributes, "spec.filter.attributes", allow_empty_values=True)
    if not wanted:
        return match_all
    items = tuple(wanted.items())

    def matches(event: Mapping[str, str]) -> bool:
        for name, want in items:
            value = event.get(name)
            if value is None or (want == "" and value == ""):
                return False
            if want and value != want:
                return False
        return True

    return matches


# -- spec.filters dialects -------------------------------------------------------------------


def _compile_filter(raw: Any, where: str) -> Filter:
    choices = ", ".join(DIALECTS)
    if not isinstance(raw, Mapping):
        raise FilterError(f"{where}: must be an object with one of {choices}")
    keys = [str(k) for k in raw]
    for key in keys:
        if key not in DIALECTS:
            raise FilterError(f"{where}.{key}: unknown filter dialect; use one of {choices}")
    if not keys:
        raise FilterError(f"{where}: empty filter; give one of {choices}")
    if len(keys) > 1:
        raise FilterError(
            f"{where}: has {len(keys)} dialects ({', '.join(keys)}); a filter has exactly one, "
            "combine several with all"
        )
    dialect = keys[0]
    value = raw[dialect]
    at = f"{where}.{dialect}"
    if dialect in ("exact", "prefix", "suffix"):
        pairs = tuple(_string_map(value, at, allow_empty_values=False).items())
        if not pairs:
            raise FilterError(f"{at}: must name at least one attribute")
        return _pairs_filter(dialect, pairs)
    if dialect in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"{at}: must be a non-empty list of filters")
        nested = [_compile_filter(f, f"{at}[{i}]") for i, f in enumerate(value)]
        return _all(nested) if dialect == "all" else _any(nested)
    if dialect == "not":
        inner = _compile_filter(value, at)
        return lambda event: not inner(event)
    if not isinstance(value, str) or not value.strip():
        raise FilterError(f"{at}: must be a non-empty CESQL expression")
    try:
        return parse_cesql(value).matches
    except CesqlError as exc:
        raise FilterError(f"{at}: {exc}") from None


def _string_map(raw: Any, where: str, *, allow_empty_values: bool) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise FilterError(f"{where}: must be an object of attribute names to strings")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _FILTER_KEY.fullmatch(name):
            raise FilterError(
                f"{where}: {name!r} is not an attribute name "
                "(a lowercase letter, then lowercase letters and digits)"
            )
        if not isinstance(value, str):
            raise FilterError(f"{where}.{name}: {value!r} must be a string (quote it in YAML)")
        if not value and not allow_empty_values:
            raise FilterError(f"{where}.{name}: must not be empty")
        out[name] = value
    return out


_PAIR_TESTS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda value, want: value == want,
    "prefix": lambda value, want: value.startswith(want),
    "suffix": lambda value, want: value.endswith(want),
}


def _pairs_filter(dialect: str, pairs: tuple[tuple[str, str], ...]) -> Filter:
    test = _PAIR_TESTS[dialect]

    def matches(event: Mapping[str, str]) -> bool:
        for name, want in pairs:
            value = event.get(name)
            if value is None or not test(value, want):
                return False
        return True

    return matches


def _all(filters: Sequence[Filter]) -> Filter:
    if len(filters) == 1:
        return filters[0]
    return lambda event: all(f(event) for f in filters)


def _any(filters: Sequence[Filter]) -> Filter:
    if len(filters) == 1:
        return filters[0]
    return lambda event: any(f(event) for f in filters)
