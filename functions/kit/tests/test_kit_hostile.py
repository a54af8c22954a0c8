"""Hostile input is the caller's fault: the kit answers 400 naming it, for every function."""

from __future__ import annotations

import json

import psycopg
import pytest
from kit import binding, handlers
from kit.errors import BadRequest


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_recursion_error_is_a_400() -> None:
    """JSON nested past Python's recursion limit is the input's fault."""
    with pytest.raises(RecursionError) as info:
        json.loads(deep(100_000))
    refused = handlers.client_error(info.value)
    assert refused is not None and refused.status == 400 and "nested" in refused.message


def test_a_number_with_too_many_digits_is_a_400() -> None:
    """int() of 5,000 digits raises ValueError; the kit makes it a 400."""
    with pytest.raises(ValueError) as info:
        int("9" * 5000)
    refused = handlers.client_error(info.value)
    assert refused is not None and "digits" in refused.message


def test_database_data_errors_are_a_400() -> None:
    """NUL in text (refused by psycopg itself) is a 400 naming the database's reason."""
    refused = handlers.client_error(
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    )
    assert refused is not None and "NUL" in refused.message


def test_lone_surrogates_are_a_400() -> None:
    """Text that cannot be encoded as UTF-8 is the input's fault."""
    with pytest.raises(UnicodeEncodeError) as info:
        "\ud800".encode()
    assert handlers.client_error(info.value) is not None


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("k"), TypeError("t")])
def test_other_errors_stay_500(error: Exception) -> None:
    """A function's own bug is not blamed on the caller."""
    assert handlers.client_error(error) is None


def test_deep_json_data_in_an_event_is_invalid_not_an_error() -> None:
    """Binary-mode JSON data nested too deep is an InvalidEvent (400), not a RecursionError."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "content-type": "application/json",
    }
    with pytest.raises(binding.InvalidEvent):
        binding.from_http(headers, deep(100_000))
    with pytest.raises(binding.InvalidEvent):
        binding.from_http(headers, b"9" * 5000)


def test_deep_structured_event_is_invalid() -> None:
    """A structured body nested too deep is an InvalidEvent (400)."""
    with pytest.raises(BadRequest):
        binding.from_http({"content-type": binding.STRUCTURED}, b'{"a":' + deep(100_000) + b"}")


def test_text_with_nul_is_described_as_base64() -> None:
    """Postgres text cannot hold NUL: such data is shown (and stored) as base64."""
    assert handlers.describe_data(b"a\x00b") == ("base64", "YQBi")
    assert handlers.describe_data("a\x00b")[0] == "base64"
    assert handlers.describe_data(b"ab") == ("text", "ab")
