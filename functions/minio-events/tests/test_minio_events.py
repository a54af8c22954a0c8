"""minio-events: MinIO webhook notifications in, AWS S3 adapter CloudEvents out to a real sink."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from kit import config, shutdown
from kit.testing import (
    FunctionLoader,
    LoadedFunction,
    RecordingSink,
    closed_port,
    function_source,
)

SOURCE = function_source(__file__)
TOKEN = "s3cr3t-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def record(key: str = "photos/my+cat%281%29.png", request_id: str = "17A2B3C4D5E6F") -> Any:
    """A record as MinIO sends it for a PUT (key URL-encoded, spaces as +)."""
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": "s3:ObjectCreated:Put",
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
            "x-amz-request-id": request_id,
            "x-minio-deployment-id": "d1",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": "uploads", "arn": "arn:aws:s3:::uploads"},
            "object": {"key": key, "size": 3, "eTag": "abc", "sequencer": "17A"},
        },
    }


def notification(*records: Any) -> bytes:
    first = records[0] if records else record()
    key = f"uploads/{first['s3']['object']['key']}"
    document = {"EventName": "s3:ObjectCreated:Put", "Key": key, "Records": list(records)}
    return json.dumps(document).encode()


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


@pytest.fixture
def start(sink: RecordingSink, monkeypatch: pytest.MonkeyPatch) -> Iterator[FunctionLoader]:
    yield FunctionLoader(
        monkeypatch, SOURCE, "minio_events", K_SINK=sink.url, MINIO_WEBHOOK_TOKEN=TOKEN
    )
    shutdown.close_all()


@pytest.fixture
def client(start: Any) -> FlaskClient:
    loaded: LoadedFunction = start()
    return loaded.client()


def test_record_becomes_an_aws_s3_adapter_cloudevent(
    client: FlaskClient, sink: RecordingSink
) -> None:
    """id, source, type, subject, time and data follow the CloudEvents AWS S3 adapter."""
    sent = record()
    answer = client.post("/", data=notification(sent), headers=AUTH)
    assert answer.status_code == 200
    assert answer.get_json() == {"emitted": 1}
    [received] = sink.requests
    event = received.event()
    assert event["id"] == (
        "17A2B3C4D5E6F.dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8"
    )
    assert event["source"] == "minio:s3.us-east-1.uploads"
    assert event["type"] == "com.amazonaws.s3.ObjectCreated:Put"
    assert event["subject"] == "photos/my cat(1).png"
    assert event["time"] == "2024-05-01T12:00:00.000Z"
    assert event["specversion"] == "1.0"
    assert received.headers["content-type"] == "application/json"
    assert event.get_data() == sent


def test_one_event_per_record(client: FlaskClient, sink: RecordingSink) -> None:
    """Every record of a notification is sent as its own event."""
    body = notification(record("a.txt", "R1"), record("b.txt", "R2"))
    assert client.post("/", data=body, headers=AUTH).get_json() == {"emitted": 2}
    assert [r.event()["subject"] for r in sink.requests] == ["a.txt", "b.txt"]


def test_k_ce_overrides_are_applied(start: Any, sink: RecordingSink) -> None:
    """A SinkBinding's K_CE_OVERRIDES extensions arrive on the events."""
    client = start(K_CE_OVERRIDES='{"extensions": {"origin": "minio"}}').client()
    client.post("/", data=notification(record()), headers=AUTH)
    assert sink.requests[0].headers["ce-origin"] == "minio"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
def test_missing_or_wrong_token_is_401(
    client: FlaskClient, sink: RecordingSink, headers: dict[str, str]
) -> None:
    """Without `Bearer <MINIO_WEBHOOK_TOKEN>` the answer is 401 and nothing is sent."""
    answer = client.post("/", data=notification(record()), headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["error"] == "missing or wrong bearer token"
    assert sink.requests == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{nope", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"EventName": "x"}', "body has no Records list"),
        (json.dumps({"Records": ["x"]}).encode(), "each record must be a JSON object"),
    ],
)
def test_malformed_notification_is_400(
    client: FlaskClient, sink: RecordingSink, body: bytes, problem: str
) -> None:
    """A body that is not a MinIO notification is 400 saying what is wrong."""
    answer = client.post("/", data=body, headers=AUTH)
    assert answer.status_code == 400
    assert problem in answer.get_json()["error"]
    assert sink.requests == []


def test_record_missing_request_id_is_400_naming_it(
    client: FlaskClient, sink: RecordingSink
) -> None:
    """A record without responseElements.x-amz-request-id cannot get an id: 400 naming it."""
    broken = record()
    del broken["responseElements"]["x-amz-request-id"]
    answer = client.post("/", data=notification(broken), headers=AUTH)
    assert answer.status_code == 400
    assert answer.get_json()["field"] == "responseElements.x-amz-request-id"
    assert sink.requests == []


def test_setup_probe_and_empty_post_are_answered(client: FlaskClient) -> None:
    """MinIO's HEAD probe gets 200; an empty authorised POST emits nothing and gets 200."""
    assert client.head("/").status_code == 200
    answer = client.post("/", data=b"", headers=AUTH)
    assert answer.status_code == 200
    assert answer.get_json() == {"emitted": 0}


def test_unreachable_sink_is_502(start: Any) -> None:
    """If K_SINK does not take the event the answer is 502 (MinIO then retries)."""
    client = start(K_SINK=f"http://127.0.0.1:{closed_port()}/", EMIT_RETRIES="0").client()
    answer = client.post("/", data=notification(record()), headers=AUTH)
    assert answer.status_code == 502
    assert answer.get_json()["emitted"] == 0


def test_token_is_required_config(start: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without MINIO_WEBHOOK_TOKEN the function does not start, naming the variable."""
    monkeypatch.delenv("MINIO_WEBHOOK_TOKEN")
    with pytest.raises(config.ConfigError, match="MINIO_WEBHOOK_TOKEN is required"):
        start()


def test_readme_documents_every_variable(start: Any) -> None:
    """Every env var the function reads appears in its README."""
    module = start().module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []
