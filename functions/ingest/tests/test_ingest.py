"""ingest: uploads stored in a real S3 under their hash, announced to a real HTTP sink."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from kit import config, shutdown
from kit.testing import FunctionLoader, RecordingSink, closed_port, function_source, load_function
from PIL import Image

SOURCE = function_source(__file__)


def png_bytes(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


@pytest.fixture
def start(
    function_env: dict[str, str], sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FunctionLoader]:
    """Loads ingest with the test's env, plus overrides per call."""
    yield FunctionLoader(monkeypatch, SOURCE, "ingest", K_SINK=sink.url)
    shutdown.close_all()


@pytest.fixture
def client(start: Any) -> FlaskClient:
    made: FlaskClient = start().client()
    return made


def test_raw_upload_is_stored_under_its_hash_and_announced(
    client: FlaskClient, sink: RecordingSink, s3_client: Any, bucket: str
) -> None:
    """A raw PNG body gives 201, an object at <sha256>.png and one object.stored event."""
    body = png_bytes()
    digest = hashlib.sha256(body).hexdigest()
    answer = client.post("/", data=body, headers={"Content-Type": "image/png"})
    assert answer.status_code == 201
    document = answer.get_json()
    assert document == {
        "bucket": bucket,
        "key": f"{digest}.png",
        "size": len(body),
        "content_type": "image/png",
        "sha256": digest,
        "event_id": document["event_id"],
    }
    stored = s3_client.get_object(Bucket=bucket, Key=f"{digest}.png")
    assert stored["Body"].read() == body
    assert stored["ContentType"] == "image/png"

    [received] = sink.requests
    assert received.headers["ce-specversion"] == "1.0"
    assert received.headers["ce-type"] == "dev.knfn.object.stored"
    assert received.headers["ce-source"] == "/functions/ingest"
    assert received.headers["ce-subject"] == f"{digest}.png"
    assert received.headers["ce-id"] == document["event_id"]
    event = received.event()
    assert event.get_data() == {k: v for k, v in document.items() if k != "event_id"}


def test_same_bytes_give_the_same_key(client: FlaskClient, sink: RecordingSink) -> None:
    """Content addressing: uploading identical bytes twice yields one key, two events."""
    body = b"hello, twelve factors\n"
    first = client.post("/", data=body, headers={"Content-Type": "text/plain"}).get_json()
    second = client.post("/", data=body, headers={"Content-Type": "text/plain"}).get_json()
    assert first["key"] == second["key"] == f"{hashlib.sha256(body).hexdigest()}.txt"
    assert first["event_id"] != second["event_id"]
    assert len(sink.requests) == 2


def test_multipart_upload_uses_the_file_field(client: FlaskClient, bucket: str) -> None:
    """A form upload takes the `file` part and its content type."""
    body = png_bytes("blue")
    answer = client.post(
        "/",
        data={"file": (io.BytesIO(body), "photo.png", "image/png")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201
    assert answer.get_json()["key"] == f"{hashlib.sha256(body).hexdigest()}.png"
    assert answer.get_json()["size"] == len(body)


def test_multipart_without_file_field_is_400(client: FlaskClient, sink: RecordingSink) -> None:
    """A form with no `file` part is refused with 400 naming the field."""
    answer = client.post("/", data={"other": "x"}, content_type="multipart/form-data")
    assert answer.status_code == 400
    assert answer.get_json()["field"] == "file"
    assert "'file'" in answer.get_json()["error"]
    assert sink.requests == []


def test_disallowed_type_is_415(client: FlaskClient, sink: RecordingSink) -> None:
    """A content type not in INGEST_ALLOWED_TYPES is 415 naming it; nothing stored or sent."""
    answer = client.post("/", data=b"PK\x03\x04", headers={"Content-Type": "application/zip"})
    assert answer.status_code == 415
    document = answer.get_json()
    assert document["content_type"] == "application/zip"
    assert "application/zip is not allowed" in document["error"]
    assert "image/png" in document["allowed"]
    assert sink.requests == []


def test_missing_content_type_is_415(client: FlaskClient) -> None:
    """A raw body without Content-Type cannot be typed: 415 saying it is required."""
    answer = client.post("/", data=b"abc", content_type="")
    assert answer.status_code == 415
    assert answer.get_json()["error"] == "Content-Type is required"


def test_oversize_declared_body_is_413(start: Any, sink: RecordingSink) -> None:
    """A Content-Length above INGEST_MAX_BYTES is refused with 413 naming the limit."""
    client = start(INGEST_MAX_BYTES="100").client()
    answer = client.post("/", data=b"x" * 101, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 413
    assert answer.get_json()["limit"] == 100
    assert "exceeds the limit of 100 bytes" in answer.get_json()["error"]
    assert sink.requests == []


def test_oversize_chunked_body_is_413(start: Any) -> None:
    """A body without Content-Length is counted as it is read and refused past the limit."""
    client = start(INGEST_MAX_BYTES="100").client()
    answer = client.post(
        "/",
        input_stream=io.BytesIO(b"x" * 5000),
        headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"},
    )
    assert answer.status_code == 413
    assert answer.get_json()["limit"] == 100


def test_oversize_multipart_file_is_413(start: Any) -> None:
    """In a form, the file itself is held to the limit, not just the whole request."""
    client = start(INGEST_MAX_BYTES="100").client()
    answer = client.post(
        "/",
        data={"file": (io.BytesIO(b"x" * 101), "a.txt", "text/plain")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 413
    assert "file exceeds the limit of 100 bytes" in answer.get_json()["error"]


def test_oversize_multipart_request_is_413_before_parsing(start: Any) -> None:
    """A form whose declared size is far past the limit is refused naming the file limit."""
    client = start(INGEST_MAX_BYTES="100").client()
    answer = client.post(
        "/",
        data={"file": (io.BytesIO(b"x" * 100_000), "a.txt", "text/plain")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "upload exceeds the limit of 100 bytes"
    assert answer.get_json()["limit"] == 100


def test_empty_body_is_400(client: FlaskClient) -> None:
    """An upload with no bytes is 400."""
    answer = client.post("/", data=b"", headers={"Content-Type": "image/png"})
    assert answer.status_code == 400
    assert "empty upload" in answer.get_json()["error"]


def test_get_is_405(client: FlaskClient) -> None:
    """Only POST uploads; other methods get 405 with Allow: POST."""
    answer = client.get("/")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert answer.get_json()["error"] == "method GET is not allowed"


def test_s3_down_is_503_and_nothing_is_announced(start: Any, sink: RecordingSink) -> None:
    """With S3 unreachable the answer is 503 within seconds and no event is emitted."""
    client = start(S3_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}").client()
    started = time.monotonic()
    answer = client.post("/", data=b"abc", headers={"Content-Type": "text/plain"})
    assert time.monotonic() - started < 5
    assert answer.status_code == 503
    assert "S3 is unavailable" in answer.get_json()["error"]
    assert sink.requests == []


def test_sink_unreachable_is_502_but_the_object_is_stored(
    start: Any, s3_client: Any, bucket: str
) -> None:
    """If K_SINK never answers, 502 says the object was stored and where."""
    client = start(K_SINK=f"http://127.0.0.1:{closed_port()}/", EMIT_RETRIES="1").client()
    body = b"stored anyway"
    answer = client.post("/", data=body, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 502
    document = answer.get_json()
    key = f"{hashlib.sha256(body).hexdigest()}.txt"
    assert document["stored"] is True
    assert document["key"] == key
    assert document["error"].startswith(f"object stored as {bucket}/{key}, but event")
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_missing_and_bad_config_is_reported_at_once(
    function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without K_SINK and with a bad limit, loading fails naming both variables."""
    monkeypatch.delenv("K_SINK", raising=False)
    monkeypatch.setenv("INGEST_MAX_BYTES", "ten")
    with pytest.raises(config.ConfigError) as caught:
        load_function(SOURCE, "ingest")
    assert [p.name for p in caught.value.problems] == ["K_SINK", "INGEST_MAX_BYTES"]


@pytest.fixture
def module(start: Any) -> Any:
    start()
    return load_function(SOURCE, "ingest").module


def test_readme_documents_every_variable(module: Any) -> None:
    """Every env var the function reads appears in its README."""
    readme = (SOURCE.parent / "README.md").read_text()
    missing = [s.name for s in config.variables(module.Settings) if s.name not in readme]
    assert missing == []


def test_extension_falls_back_for_unknown_types(module: Any) -> None:
    """Known types get their usual extension; unknown ones get bin."""
    assert module.extension("image/jpeg") == "jpg"
    assert module.extension("application/x-unknown-thing") == "bin"
