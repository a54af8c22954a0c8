"""kit.config: typed settings from env, every problem reported in one error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kit import config
from kit.errors import KitError
from kit.events import SinkSettings
from kit.s3 import S3Settings


@dataclass(frozen=True)
class Inner:
    region: Annotated[str, config.env("REGION", default="us-east-1")]
    retries: Annotated[int, config.env("RETRIES", config.integer(min=0, max=5), default=1)]


@dataclass(frozen=True)
class Outer:
    name: Annotated[str, config.env("NAME")]
    size: Annotated[int, config.env("SIZE", config.integer(min=1), default=10)]
    password: Annotated[str, config.env("PASSWORD", secret=True, default="")]
    port: Annotated[int, config.env("PORT_NUMBER", config.integer(min=1, max=65535))]
    inner: Inner


def test_load_parses_values_and_applies_defaults() -> None:
    """Set variables are parsed to their types; unset ones take their defaults."""
    settings = config.load(Outer, {"NAME": "x", "PORT_NUMBER": "8080", "RETRIES": "3"})
    assert settings == Outer(
        name="x", size=10, password="", port=8080, inner=Inner(region="us-east-1", retries=3)
    )


def test_every_problem_is_reported_in_one_error() -> None:
    """Missing and invalid variables, in the class and its groups, come in one ConfigError."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(Outer, {"SIZE": "big", "PORT_NUMBER": "70000", "RETRIES": "9"})
    names = [problem.name for problem in caught.value.problems]
    assert names == ["NAME", "SIZE", "PORT_NUMBER", "RETRIES"]
    message = str(caught.value)
    assert "NAME is required but not set" in message
    assert "SIZE='big': is not an integer" in message
    assert "PORT_NUMBER='70000': must be at most 65535" in message
    assert "RETRIES='9': must be at most 5" in message


def test_config_error_is_a_value_error_and_a_kit_error() -> None:
    """ConfigError subclasses both ValueError and the kit's one base, KitError."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(Outer, {})
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, KitError)


def test_secret_values_are_never_echoed() -> None:
    """An invalid secret is reported by name only."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(SecretInt, {"TOKEN_NUMBER": "hunter2"})
    assert "hunter2" not in str(caught.value)
    assert "TOKEN_NUMBER='<secret>'" in str(caught.value)


@dataclass(frozen=True)
class SecretInt:
    token: Annotated[int, config.env("TOKEN_NUMBER", config.integer(), secret=True)]


def test_empty_value_counts_as_unset() -> None:
    """An empty variable (an absent ConfigMap key) falls back to the default or is missing."""
    settings = config.load(Inner, {"REGION": "", "RETRIES": ""})
    assert settings == Inner(region="us-east-1", retries=1)
    with pytest.raises(config.ConfigError, match="NAME is required"):
        config.load(Outer, {"NAME": "", "PORT_NUMBER": "1"})


def test_sink_settings_require_k_sink() -> None:
    """An emitter cannot start without K_SINK; a bad K_CE_OVERRIDES is named too."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(SinkSettings, {"K_CE_OVERRIDES": "{not json"})
    assert [p.name for p in caught.value.problems] == ["K_SINK", "K_CE_OVERRIDES"]


def test_cross_field_problems_are_reported() -> None:
    """A settings class's problems() hook adds relations between fields (S3 key pairs)."""
    with pytest.raises(config.ConfigError, match="AWS_SECRET_ACCESS_KEY is required with"):
        config.load(S3Settings, {"AWS_ACCESS_KEY_ID": "id"})
    assert config.load(S3Settings, {}).access_key_id is None


def test_variables_lists_every_name_groups_included() -> None:
    """variables() walks groups, so docs and checks can list what a function reads."""
    names = [spec.name for spec in config.variables(Outer)]
    assert names == ["NAME", "SIZE", "PASSWORD", "PORT_NUMBER", "REGION", "RETRIES"]
    required = {spec.name for spec in config.variables(Outer) if spec.required}
    assert required == {"NAME", "PORT_NUMBER"}


def test_field_without_env_is_a_programming_error() -> None:
    """A field that is neither Annotated with env() nor a group is refused loudly."""
    with pytest.raises(TypeError, match=r"Broken\.value needs Annotated"):
        config.load(Broken, {})


@dataclass(frozen=True)
class Broken:
    value: int


@pytest.mark.parametrize(
    ("parser", "raw", "reason"),
    [
        (config.integer(), "1.5", "is not an integer"),
        (config.integer(min=1), "0", "must be at least 1"),
        (config.string_set, " , ", "must list at least one"),
        (config.http_url, "ftp://x", "absolute http"),
        (config.http_url, "localhost:8080", "absolute http"),
        (config.boolean, "maybe", "true or false"),
        (config.json_object, "[1]", "must be a JSON object"),
        (config.json_object, "{", "is not valid JSON"),
        (config.non_empty, "   ", "must not be blank"),
    ],
)
def test_parsers_reject_bad_values_with_a_reason(parser: object, raw: str, reason: str) -> None:
    """Each parser raises ValueError whose message says what a valid value looks like."""
    assert callable(parser)
    with pytest.raises(ValueError, match=reason):
        parser(raw)


def test_string_set_normalises_items() -> None:
    """Comma-separated items are trimmed and lower-cased; blanks are dropped."""
    assert config.string_set(" Image/PNG, text/plain ,,") == frozenset({"image/png", "text/plain"})


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integer_parser_round_trips(value: int) -> None:
    """Any integer written in decimal parses back to itself (whitespace allowed)."""
    assert config.integer()(f" {value} ") == value


@given(st.integers(), st.integers(min_value=0, max_value=100))
def test_integer_bounds_are_inclusive(value: int, low: int) -> None:
    """integer(min=, max=) accepts exactly the values within [min, max]."""
    parse = config.integer(min=low, max=low + 10)
    if low <= value <= low + 10:
        assert parse(str(value)) == value
    else:
        with pytest.raises(ValueError):
            parse(str(value))
