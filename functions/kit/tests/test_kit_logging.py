"""kit.logging: JSON lines on stdout, flushed per line, with request context bound and cleared."""

from __future__ import annotations

import json
import logging
import select
import subprocess
import sys
import textwrap
from datetime import datetime
from typing import Any

import pytest
from kit import config
from kit import logging as kit_logging


def configure(**env: str) -> None:
    kit_logging.configure(config.load(kit_logging.LogSettings, env))


def lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def reset_logging() -> Any:
    yield
    configure()


def test_a_line_is_one_json_object_with_identity(capsys: pytest.CaptureFixture[str]) -> None:
    """Each line has an ISO UTC timestamp, level, message, service and revision."""
    configure(K_SERVICE="ingest", K_REVISION="ingest-00002")
    kit_logging.get_logger("t").info("stored", key="abc")
    [line] = lines(capsys.readouterr().out)
    assert line["message"] == "stored"
    assert line["level"] == "info"
    assert line["service"] == "ingest"
    assert line["revision"] == "ingest-00002"
    assert line["key"] == "abc"
    assert line["logger_name"] == "t"
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None


def test_log_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_LEVEL=WARNING drops info and debug lines."""
    configure(LOG_LEVEL="warning")
    log = kit_logging.get_logger()
    log.info("quiet")
    log.warning("loud")
    assert [line["message"] for line in lines(capsys.readouterr().out)] == ["loud"]


def test_bad_log_level_is_a_config_error() -> None:
    """An unknown LOG_LEVEL is named in the ConfigError."""
    with pytest.raises(config.ConfigError, match="LOG_LEVEL='chatty': must be one of"):
        config.load(kit_logging.LogSettings, {"LOG_LEVEL": "chatty"})


def test_request_scope_binds_then_clears(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines inside a request carry its execution id; lines after it do not."""
    configure()
    log = kit_logging.get_logger()
    with kit_logging.request_scope("exec-123", path="/x") as execution_id:
        kit_logging.bind(ce_id="e1")
        log.info("inside")
    log.info("outside")
    inside, outside = lines(capsys.readouterr().out)
    assert execution_id == "exec-123"
    assert (inside["execution_id"], inside["path"], inside["ce_id"]) == ("exec-123", "/x", "e1")
    assert "execution_id" not in outside and "ce_id" not in outside


def test_request_scope_makes_an_id_when_none_was_sent() -> None:
    """Without a Function-Execution-Id header, every request gets a fresh id."""
    with kit_logging.request_scope(None) as first:
        assert kit_logging.bound()["execution_id"] == first
    with kit_logging.request_scope("") as second:
        pass
    assert first and second and first != second


def test_request_scope_clears_leftovers_from_a_previous_request() -> None:
    """Context left bound on a thread is not inherited by the next request."""
    kit_logging.bind(stale="yes")
    with kit_logging.request_scope("x"):
        assert "stale" not in kit_logging.bound()


def test_stdlib_records_are_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    """Records from the logging module (libraries) come out as the same JSON lines."""
    configure(K_SERVICE="svc")
    logging.getLogger("some.library").warning("disk %s", "full")
    [line] = lines(capsys.readouterr().out)
    assert line["message"] == "disk full"
    assert line["level"] == "warning"
    assert line["logger_name"] == "some.library"
    assert line["service"] == "svc"


def test_exceptions_are_rendered_into_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    """log.exception puts the traceback into the JSON object, still one line."""
    configure()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        kit_logging.get_logger().exception("failed")
    [line] = lines(capsys.readouterr().out)
    assert "RuntimeError: boom" in line["exception"]


def test_lines_are_flushed_at_once_to_a_pipe() -> None:
    """A line reaches a pipe while the process is still running (no block buffering)."""
    script = textwrap.dedent(
        """
        import sys
        from kit import config, logging as kl
        kl.configure(config.load(kl.LogSettings, {}))
        kl.get_logger().info("ready")
        sys.stdin.read()  # stay alive until the parent closes stdin
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 10)
        assert readable, "no line within 10 s: stdout is buffered"
        line = child.stdout.readline()
        assert json.loads(line)["message"] == "ready"
        assert child.poll() is None, "the line must arrive before the process exits"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
