"""kit.handlers: the HTTP boundary, exercised through real tiny functions in functions-framework."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from kit import binding, config, handlers
from kit import logging as kit_logging
from kit.testing import load_function

TINY = Path(__file__).with_name("tiny_functions.py")
PING = {
    "ce-specversion": "1.0",
    "ce-id": "p1",
    "ce-source": "/test",
    "ce-type": "ping",
    "content-type": "application/json",
}


def client_for(target: str, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("FUNCTION_TARGET", target)
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "http")
    return load_function(TINY, target).client()


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    kit_logging.configure(config.load(kit_logging.LogSettings, {}))
    yield client_for("consumer", monkeypatch)


@pytest.fixture
def upload(monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    return client_for("upload", monkeypatch)


def log_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_reply_event_is_sent_back_in_binary_mode(consumer: FlaskClient) -> None:
    """A returned CloudEvent is the 200 reply, as ce-* headers plus a JSON body."""
    answer = consumer.post("/", data=b"{}", headers=PING)
    assert answer.status_code == 200
    assert answer.headers["ce-type"] == "pong"
    assert answer.headers["ce-id"] == "r1"
    assert answer.headers["content-type"] == "application/json"
    assert answer.get_json() == {"to": "p1"}


def test_no_reply_is_an_empty_204(consumer: FlaskClient) -> None:
    """Returning None acknowledges with 204 and no body (a broker counts it as delivered)."""
    answer = consumer.post("/", data=b"{}", headers={**PING, "ce-type": "other"})
    assert answer.status_code == 204
    assert answer.data == b""


def test_structured_events_are_accepted(consumer: FlaskClient) -> None:
    """A structured-mode event is parsed just like a binary one."""
    event = CloudEvent({"type": "ping", "source": "/test", "id": "s1"}, {"x": 1})
    message = binding.to_structured(event)
    answer = consumer.post("/", data=message.body, headers=dict(message.headers))
    assert answer.status_code == 200
    assert answer.get_json() == {"to": "s1"}


def test_malformed_event_is_a_400_naming_the_problem(consumer: FlaskClient) -> None:
    """Missing ce-id gives 400 JSON whose error names the header."""
    headers = {k: v for k, v in PING.items() if k != "ce-id"}
    answer = consumer.post("/", data=b"{}", headers=headers)
    assert answer.status_code == 400
    assert "missing required header ce-id" in answer.get_json()["error"]


def test_plain_json_post_is_not_a_cloudevent(consumer: FlaskClient) -> None:
    """A POST without ce-* headers or the structured media type is refused with 400."""
    answer = consumer.post("/", json={"hello": "world"})
    assert answer.status_code == 400
    assert "not a CloudEvent" in answer.get_json()["error"]


def test_get_on_a_consumer_is_405_with_allow(consumer: FlaskClient) -> None:
    """Consumers take POST only; the 405 says so in Allow and in the JSON body."""
    answer = consumer.get("/")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert answer.get_json()["allowed"] == ["POST"]


def test_kit_errors_keep_their_status_and_fields(consumer: FlaskClient) -> None:
    """A KitError raised by the function becomes its status with its fields in the JSON."""
    answer = consumer.post("/", data=b"{}", headers={**PING, "ce-type": "bad", "ce-id": "b1"})
    assert answer.status_code == 422
    assert answer.get_json() == {"error": "cannot use this one", "ce_id": "b1"}


def test_unexpected_errors_are_500_json_without_internals(
    consumer: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any other exception is a 500 JSON answer; the traceback goes to the log only."""
    answer = consumer.post("/", data=b"{}", headers={**PING, "ce-type": "boom"})
    assert answer.status_code == 500
    assert answer.get_json() == {"error": "internal error: RuntimeError"}
    [line] = [x for x in log_lines(capsys.readouterr().out) if x["message"] == "unhandled error"]
    assert "secret internals" in line["exception"]


def test_log_lines_carry_the_execution_id_and_event(
    consumer: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lines logged while handling carry Function-Execution-Id and the event's id/type/source."""
    consumer.post("/", data=b"{}", headers={**PING, "Function-Execution-Id": "exec-9"})
    [line] = [x for x in log_lines(capsys.readouterr().out) if x["message"] == "consumed"]
    assert line["execution_id"] == "exec-9"
    assert (line["ce_id"], line["ce_type"], line["ce_source"]) == ("p1", "ping", "/test")


def test_read_body_within_the_limit(upload: FlaskClient) -> None:
    """A body within the limit is returned and still parses as a form afterwards."""
    answer = upload.post("/", data={"a": "1"})
    assert answer.status_code == 200
    assert answer.get_json() == {"size": 3, "form": {"a": "1"}}


def test_read_body_refuses_a_declared_oversize_body(upload: FlaskClient) -> None:
    """Content-Length over the limit is 413 before a byte is read."""
    answer = upload.post("/", data=b"x" * 11)
    assert answer.status_code == 413
    assert answer.get_json()["limit"] == 10


def test_read_body_refuses_an_undeclared_oversize_body(upload: FlaskClient) -> None:
    """A chunked body (no Content-Length) is cut off at limit + 1 bytes and refused."""
    answer = upload.post(
        "/", input_stream=io.BytesIO(b"y" * 1000), headers={"Transfer-Encoding": "chunked"}
    )
    assert answer.status_code == 413
    assert "exceeds the limit of 10 bytes" in answer.get_json()["error"]


def test_describe_data_picks_json_text_or_base64() -> None:
    """describe_data shows JSON as is, UTF-8 as text, other bytes as base64."""
    assert handlers.describe_data({"a": 1}) == ("json", {"a": 1})
    assert handlers.describe_data(b"caf\xc3\xa9") == ("text", "café")
    assert handlers.describe_data(b"\xff\x00") == ("base64", "/wA=")
    assert handlers.describe_data(None) == (None, None)


def test_describe_separates_extensions() -> None:
    """describe() lists core attributes and extensions apart."""
    event = binding.new_event(type="t", source="/s", data=[1], id="1", knativeerrorcode="500")
    view = handlers.describe(event)
    assert view["extensions"] == {"knativeerrorcode": "500"}
    assert view["attributes"]["type"] == "t"
    assert (view["data_encoding"], view["data"]) == ("json", [1])
