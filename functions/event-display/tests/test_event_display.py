"""event-display: every CloudEvent logged as one JSON line, acknowledged with an empty 204."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from kit import binding, config
from kit.testing import function_source, load_function

SOURCE = function_source(__file__)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("FUNCTION_TARGET", "display")
    monkeypatch.setenv("K_SERVICE", "event-display")
    yield load_function(SOURCE, "display").client()


def displayed(out: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [
        json.loads(x) for x in out.splitlines() if x.startswith("{") and "cloudevent received" in x
    ]
    assert len(lines) == 1
    return lines[0]


def test_binary_json_event_is_logged_with_everything(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attributes, extensions and decoded JSON data land in one line; the answer is 204."""
    event = binding.new_event(
        type="dev.knfn.object.stored",
        source="/functions/ingest",
        subject="k.png",
        data={"key": "k.png"},
        id="e-1",
        time="2024-01-01T00:00:00Z",
        knativearrivaltime="2024-01-01T00:00:01Z",
    )
    message = binding.to_binary(event)
    answer = client.post("/", data=message.body, headers=dict(message.headers))
    assert answer.status_code == 204
    assert answer.data == b""
    line = displayed(capsys.readouterr().out)
    assert line["service"] == "event-display"
    assert line["ce_id"] == "e-1"
    shown = line["cloudevent"]
    assert shown["attributes"] == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/functions/ingest",
        "type": "dev.knfn.object.stored",
        "subject": "k.png",
        "time": "2024-01-01T00:00:00Z",
        "datacontenttype": "application/json",
    }
    assert shown["extensions"] == {"knativearrivaltime": "2024-01-01T00:00:01Z"}
    assert (shown["data_encoding"], shown["data"]) == ("json", {"key": "k.png"})


def test_text_data_is_logged_as_text(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """UTF-8 data that is not JSON is shown as text."""
    headers = {"ce-specversion": "1.0", "ce-id": "t", "ce-source": "/s", "ce-type": "t"}
    client.post("/", data="héllo".encode(), headers={**headers, "Content-Type": "text/plain"})
    shown = displayed(capsys.readouterr().out)["cloudevent"]
    assert (shown["data_encoding"], shown["data"]) == ("text", "héllo")


def test_binary_data_is_logged_as_base64(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8 are shown as base64 (structured data_base64 here)."""
    event = CloudEvent({"type": "t", "source": "/s", "id": "b"}, b"\xff\xfe\x00")
    message = binding.to_structured(event)
    answer = client.post("/", data=message.body, headers=dict(message.headers))
    assert answer.status_code == 204
    shown = displayed(capsys.readouterr().out)["cloudevent"]
    assert (shown["data_encoding"], shown["data"]) == ("base64", "//4A")


def test_malformed_event_is_400(client: FlaskClient) -> None:
    """A request that is not a CloudEvent is 400 naming why."""
    answer = client.post("/", data=b"hi", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 400
    assert "not a CloudEvent" in answer.get_json()["error"]


def test_readme_documents_every_variable(client: FlaskClient) -> None:
    """Every env var the function reads appears in its README."""
    module = load_function(SOURCE, "display").module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []
