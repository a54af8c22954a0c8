"""`knfn load`'s command line: what it refuses before sending anything, and why."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from knfn.cli import main
from knfn.ports import free_port


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["hello", "-c", "5", "--rps", "10"], "-c/--concurrency and --rps"),
        (["hello", "--max-errors", "5"], "above 100%"),
        (["hello", "--max-errors", "some"], "not a fraction"),
        (["hello", "-d", "soon"], "not a duration"),
        (["hello", "-d", "0s"], "more than zero"),
        (["broker:default"], "is a broker"),
        (["hello", "--host", "nowhere"], "--host 'nowhere'"),
        (["Hello!"], "not a Service name"),
        (["hello", "-X", "GE T"], "not an HTTP method"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(args: list[str], said: str) -> None:
    """Each bad command line stops at once with exit code 2 and says what is wrong."""
    result = CliRunner().invoke(main, ["load", "--port", str(free_port()), *args])
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_no_gateway_is_one_line_and_exit_1() -> None:
    """Nothing on --port: one message naming the port and the flag, exit 1."""
    port = free_port()
    result = CliRunner().invoke(main, ["load", "hello", "--port", str(port), "-d", "1s"])
    assert result.exit_code == 1, result.output
    assert f"nothing answers at 127.0.0.1:{port}" in result.output
    assert "--port, env KNFN_PORT" in result.output
