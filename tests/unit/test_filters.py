"""Trigger filters: filter.attributes, the filters dialects (cesql among them), shape errors."""

from __future__ import annotations

from typing import Any

import pytest

from knfn.eventing.filters import FilterError, compile_trigger

EVENT = {
    "specversion": "1.0",
    "id": "abc-1",
    "source": "/apis/v1/namespaces/default/pingsources/ping",
    "type": "dev.knative.sources.ping",
    "subject": "order-17",
    "myext": "my-value",
    "empty": "",
}
PING = "dev.knative.sources.ping"


# -- spec.filter.attributes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, True),
        ({"type": PING}, True),
        ({"type": PING, "myext": "my-value"}, True),
        ({"type": PING, "myext": "other"}, False),
        ({"type": "dev.knative.sources.Ping"}, False),
        ({"myext": ""}, True),
        ({"missing": ""}, False),
        ({"empty": ""}, False),
        ({"empty": "x"}, False),
        ({"missing": "x"}, False),
        ({"type": PING, "missing": ""}, False),
    ],
)
def test_filter_attributes(attributes: dict[str, str], expected: bool) -> None:
    """Every key present and equal; an empty value means any non-empty value; missing never."""
    assert compile_trigger({"filter": {"attributes": attributes}})(EVENT) is expected


@pytest.mark.parametrize("spec", [{}, {"filter": {}}, {"filter": None}, {"filters": []}])
def test_no_filter_matches_everything(spec: dict[str, Any]) -> None:
    """Without filters (or with an empty list) every event matches."""
    assert compile_trigger(spec)({"type": "anything"})


# -- spec.filters dialects -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"exact": {"type": PING}}, True),
        ({"exact": {"type": "dev.knative.sources"}}, False),
        ({"exact": {"type": PING.upper()}}, False),
        ({"exact": {"type": PING, "subject": "order-17"}}, True),
        ({"exact": {"type": PING, "subject": "order-18"}}, False),
        ({"exact": {"missing": "x"}}, False),
        ({"prefix": {"type": "dev.knative."}}, True),
        ({"prefix": {"type": PING}}, True),
        ({"prefix": {"type": "Dev."}}, False),
        ({"prefix": {"missing": "dev"}}, False),
        ({"prefix": {"type": "dev.", "source": "/apis/"}}, True),
        ({"prefix": {"type": "dev.", "source": "/other/"}}, False),
        ({"suffix": {"type": ".ping"}}, True),
        ({"suffix": {"type": ".pong"}}, False),
        ({"suffix": {"missing": "x"}}, False),
        ({"not": {"exact": {"type": PING}}}, False),
        ({"not": {"exact": {"missing": "x"}}}, True),
        ({"not": {"prefix": {"missing": "x"}}}, True),
        ({"not": {"not": {"exact": {"type": PING}}}}, True),
        ({"all": [{"exact": {"type": PING}}, {"prefix": {"source": "/apis"}}]}, True),
        ({"all": [{"exact": {"type": PING}}, {"prefix": {"source": "/nope"}}]}, False),
        ({"all": [{"exact": {"type": PING}}]}, True),
        ({"any": [{"exact": {"type": "nope"}}, {"suffix": {"subject": "-17"}}]}, True),
        ({"any": [{"exact": {"type": "nope"}}, {"suffix": {"subject": "-18"}}]}, False),
        ({"any": [{"exact": {"missing": "x"}}, {"exact": {"also": "y"}}]}, False),
        (
            {
                "all": [
                    {"any": [{"exact": {"type": "a"}}, {"prefix": {"type": "dev."}}]},
                    {"not": {"exact": {"subject": "order-18"}}},
                    {"any": [{"cesql": "myext LIKE 'my-%'"}, {"exact": {"id": "x"}}]},
                ]
            },
            True,
        ),
        (
            {
                "any": [
                    {"all": [{"exact": {"type": PING}}, {"exact": {"missing": "x"}}]},
                    {"not": {"any": [{"exact": {"id": "abc-1"}}, {"exact": {"id": "x"}}]}},
                ]
            },
            False,
        ),
        ({"cesql": "type = 'dev.knative.sources.ping'"}, True),
        ({"cesql": "missing = 'x'"}, False),
    ],
)
def test_filters_dialects(entry: dict[str, Any], expected: bool) -> None:
    """exact, prefix and suffix are case-sensitive and all pairs must hold; nesting composes."""
    assert compile_trigger({"filters": [entry]})(EVENT) is expected


def test_filters_entries_are_anded() -> None:
    """Every entry of spec.filters must match."""
    both = [{"exact": {"type": PING}}, {"cesql": "subject = 'order-17'"}]
    assert compile_trigger({"filters": both})(EVENT)
    one_fails = [{"exact": {"type": PING}}, {"cesql": "subject = 'order-18'"}]
    assert not compile_trigger({"filters": one_fails})(EVENT)


def test_filters_win_over_filter() -> None:
    """A non-empty spec.filters overrides spec.filter (the docs' dev.knative.a/b example)."""
    spec = {
        "filters": [{"exact": {"type": "dev.knative.a"}}],
        "filter": {"attributes": {"type": "dev.knative.b"}},
    }
    matches = compile_trigger(spec)
    assert matches({"type": "dev.knative.a"}) and not matches({"type": "dev.knative.b"})


def test_empty_filters_fall_back_to_filter() -> None:
    """An empty spec.filters list leaves spec.filter in charge."""
    spec = {"filters": [], "filter": {"attributes": {"type": "dev.knative.b"}}}
    matches = compile_trigger(spec)
    assert matches({"type": "dev.knative.b"}) and not matches({"type": "dev.knative.a"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"filters": {"exact": {"type": "a"}}}, "spec.filters: must be a list"),
        ({"filters": ["type=a"]}, "spec.filters[0]: must be an object with one of exact"),
        ({"filters": [{}]}, "spec.filters[0]: empty filter"),
        (
            {"filters": [{"exact": {"type": "a"}, "suffix": {"myext": "-value"}}]},
            "spec.filters[0]: has 2 dialects (exact, suffix)",
        ),
        ({"filters": [{"regex": {"type": "a.*"}}]}, "spec.filters[0].regex: unknown filter"),
        ({"filters": [{"exact": {}}]}, "spec.filters[0].exact: must name at least one"),
        ({"filters": [{"exact": {"type": ""}}]}, "spec.filters[0].exact.type: must not be empty"),
        ({"filters": [{"prefix": {"type": 5}}]}, "spec.filters[0].prefix.type: 5 must be a str"),
        ({"filters": [{"suffix": {"Type": "x"}}]}, "'Type' is not an attribute name"),
        ({"filters": [{"exact": {"1type": "x"}}]}, "'1type' is not an attribute name"),
        ({"filters": [{"exact": ["type"]}]}, "spec.filters[0].exact: must be an object"),
        ({"filters": [{"all": []}]}, "spec.filters[0].all: must be a non-empty list"),
        ({"filters": [{"any": {"exact": {}}}]}, "spec.filters[0].any: must be a non-empty list"),
        (
            {"filters": [{"all": [{"exact": {"type": "a"}}, {"bogus": 1}]}]},
            "spec.filters[0].all[1].bogus: unknown filter dialect",
        ),
        ({"filters": [{"not": {}}]}, "spec.filters[0].not: empty filter"),
        ({"filters": [{"cesql": ""}]}, "spec.filters[0].cesql: must be a non-empty CESQL"),
        ({"filters": [{"cesql": 1}]}, "spec.filters[0].cesql: must be a non-empty CESQL"),
        (
            {"filters": [{"exact": {"type": "a"}}, {"cesql": "type = "}]},
            "spec.filters[1].cesql: invalid CESQL at position 8: expected a value",
        ),
        (
            {"filters": [{"not": {"cesql": "FOO(type)"}}]},
            "spec.filters[0].not.cesql: invalid CESQL at position 1: unknown function FOO",
        ),
        ({"filter": {"attributes": {"type": 1}}}, "spec.filter.attributes.type: 1 must be a str"),
        ({"filter": {"attributes": ["type"]}}, "spec.filter.attributes: must be an object"),
        ({"filter": "type=a"}, "spec.filter: must be an object"),
        (
            {"filters": [{"exact": {"type": "a"}}], "filter": {"attributes": {"Bad": "x"}}},
            "spec.filter.attributes: 'Bad' is not an attribute name",
        ),
    ],
)
def test_malformed_filters_name_the_field(spec: dict[str, Any], message: str) -> None:
    """Zero or two dialects, empty or non-string values and bad CESQL are errors at load."""
    with pytest.raises(FilterError) as info:
        compile_trigger(spec)
    assert message in str(info.value)
