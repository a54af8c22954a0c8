"""hello: the autoscaling demo's parameters, limits and answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from kit import config
from kit.testing import FunctionLoader, LoadedFunction, function_source

SOURCE = function_source(__file__)


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch) -> Iterator[FunctionLoader]:
    yield FunctionLoader(monkeypatch, SOURCE, "hello", K_SERVICE="hello", K_REVISION="hello-00003")


@pytest.fixture
def client(start: Any) -> FlaskClient:
    loaded: LoadedFunction = start()
    return loaded.client()


def test_plain_get_names_the_revision(client: FlaskClient) -> None:
    """With no parameters it only says hello, naming service and revision."""
    answer = client.get("/")
    assert answer.status_code == 200
    assert answer.get_json() == {
        "message": "Hello from hello-00003",
        "service": "hello",
        "revision": "hello-00003",
    }


def test_sleep_prime_and_bloat_are_done_and_reported(client: FlaskClient) -> None:
    """Each parameter is carried out and reported in the answer."""
    document = client.get("/?sleep=20&prime=100&bloat=3").get_json()
    assert document["slept_ms"] >= 20
    assert document["prime"] == {"below": 100, "largest": 97}
    assert document["bloat_mb"] == 3


@pytest.mark.parametrize(
    ("query", "parameter", "value"),
    [
        ("sleep=abc", "sleep", "abc"),
        ("sleep=-5", "sleep", "-5"),
        ("sleep=30001", "sleep", "30001"),
        ("prime=1.5", "prime", "1.5"),
        ("prime=50000001", "prime", "50000001"),
        ("bloat=513", "bloat", "513"),
        ("bloat=0x10", "bloat", "0x10"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    client: FlaskClient, query: str, parameter: str, value: str
) -> None:
    """A non-integer, negative or over-limit value is 400 naming the parameter and value."""
    answer = client.get(f"/?{query}")
    assert answer.status_code == 400
    document = answer.get_json()
    assert (document["parameter"], document["value"]) == (parameter, value)
    assert document["error"].startswith(f"{parameter} must be an integer from 0 to ")


def test_limits_come_from_the_environment(start: Any) -> None:
    """HELLO_MAX_* lower the limits; the 400 says the configured maximum."""
    client = start(HELLO_MAX_SLEEP_MS="10", HELLO_MAX_PRIME="1000", HELLO_MAX_BLOAT_MB="1").client()
    assert client.get("/?sleep=10").status_code == 200
    answer = client.get("/?sleep=11")
    assert answer.status_code == 400
    assert answer.get_json()["max"] == 10
    assert client.get("/?prime=1001").get_json()["max"] == 1000
    assert client.get("/?bloat=2").get_json()["max"] == 1


def test_bad_limits_fail_at_start_all_at_once(start: Any) -> None:
    """Invalid HELLO_MAX_* values stop the function from loading, all named in one error."""
    with pytest.raises(config.ConfigError) as caught:
        start(HELLO_MAX_SLEEP_MS="soon", HELLO_MAX_BLOAT_MB="-1", LOG_LEVEL="loud")
    assert [p.name for p in caught.value.problems] == [
        "LOG_LEVEL",
        "HELLO_MAX_SLEEP_MS",
        "HELLO_MAX_BLOAT_MB",
    ]


def test_post_is_405(client: FlaskClient) -> None:
    """hello answers GET (and HEAD) only."""
    answer = client.post("/")
    assert answer.status_code == 405
    assert answer.get_json()["allowed"] == ["GET", "HEAD"]


@pytest.mark.parametrize(
    ("n", "largest"), [(0, None), (2, None), (3, 2), (10, 7), (11, 7), (7920, 7919)]
)
def test_largest_prime_below(start: Any, n: int, largest: int | None) -> None:
    """The sieve finds the largest prime strictly below n."""
    assert start().module.largest_prime_below(n) == largest


def test_readme_documents_every_variable(start: Any) -> None:
    """Every env var the function reads appears in its README."""
    module = start().module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []
