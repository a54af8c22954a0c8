"""thumbnail: object.stored events in, PNG thumbnails in a real S3, thumbnail.created out."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from kit import binding, config, shutdown
from kit.testing import FunctionLoader, closed_port, function_source, load_function
from PIL import Image
from werkzeug.test import TestResponse

SOURCE = function_source(__file__)


def image_bytes(size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "green").save(out, format=fmt)
    return out.getvalue()


def stored_event(bucket: str, key: str, content_type: str, **extra: Any) -> CloudEvent:
    data = {"bucket": bucket, "key": key, "size": 1, "content_type": content_type, "sha256": "0"}
    return binding.new_event(
        type="dev.knfn.object.stored",
        source="/functions/ingest",
        subject=key,
        data={**data, **extra},
        id=f"id-{key}",
    )


def deliver(client: FlaskClient, event: CloudEvent) -> TestResponse:
    message = binding.to_binary(event)
    return client.post("/", data=message.body, headers=dict(message.headers))


@pytest.fixture
def start(
    function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FunctionLoader]:
    yield FunctionLoader(monkeypatch, SOURCE, "thumbnail")
    shutdown.close_all()


@pytest.fixture
def client(start: Any) -> FlaskClient:
    made: FlaskClient = start().client()
    return made


def test_image_gets_a_thumbnail_and_a_reply_event(
    client: FlaskClient, s3_client: Any, bucket: str
) -> None:
    """A 300x200 PNG becomes a 128x85 PNG at thumbnails/<stem>.png, announced in the reply."""
    s3_client.put_object(Bucket=bucket, Key="pic.png", Body=image_bytes((300, 200)))
    answer = deliver(client, stored_event(bucket, "pic.png", "image/png"))
    assert answer.status_code == 200
    assert answer.headers["ce-type"] == "dev.knfn.thumbnail.created"
    assert answer.headers["ce-source"] == "/functions/thumbnail"
    assert answer.headers["ce-subject"] == "pic.png"
    assert answer.headers["ce-specversion"] == "1.0"
    data = answer.get_json()
    assert data == {
        "bucket": bucket,
        "key": "pic.png",
        "thumbnail_key": "thumbnails/pic.png",
        "width": 128,
        "height": 85,
    }
    stored = s3_client.get_object(Bucket=bucket, Key="thumbnails/pic.png")
    assert stored["ContentType"] == "image/png"
    with Image.open(io.BytesIO(stored["Body"].read())) as thumb:
        assert (thumb.format, thumb.size) == ("PNG", (128, 85))


def test_jpeg_in_a_folder_keeps_the_folder(start: Any, s3_client: Any, bucket: str) -> None:
    """photos/cat.jpg -> thumbnails/photos/cat.png, sized by THUMBNAIL_SIZE."""
    client = start(THUMBNAIL_SIZE="32").client()
    s3_client.put_object(Bucket=bucket, Key="photos/cat.jpg", Body=image_bytes((64, 64), "JPEG"))
    answer = deliver(client, stored_event(bucket, "photos/cat.jpg", "image/jpeg"))
    assert answer.status_code == 200
    assert answer.get_json()["thumbnail_key"] == "thumbnails/photos/cat.png"
    assert (answer.get_json()["width"], answer.get_json()["height"]) == (32, 32)


def test_structured_event_is_accepted(client: FlaskClient, s3_client: Any, bucket: str) -> None:
    """The same event in structured mode is handled the same way."""
    s3_client.put_object(Bucket=bucket, Key="s.png", Body=image_bytes((10, 10)))
    message = binding.to_structured(stored_event(bucket, "s.png", "image/png"))
    answer = client.post("/", data=message.body, headers=dict(message.headers))
    assert answer.status_code == 200
    assert answer.get_json()["thumbnail_key"] == "thumbnails/s.png"


def test_redelivery_gets_the_same_reply_id(
    client: FlaskClient, s3_client: Any, bucket: str
) -> None:
    """The reply id derives from the event, so a redelivered event yields the same reply."""
    s3_client.put_object(Bucket=bucket, Key="r.png", Body=image_bytes((10, 10)))
    event = stored_event(bucket, "r.png", "image/png")
    first = deliver(client, event).headers["ce-id"]
    second = deliver(client, event).headers["ce-id"]
    assert first == second
    event["id"] = "another-upload"
    assert deliver(client, event).headers["ce-id"] != first


def test_non_image_is_acknowledged_without_reply(
    client: FlaskClient, s3_client: Any, bucket: str
) -> None:
    """A text object is acknowledged with an empty 204 and gets no thumbnail."""
    answer = deliver(client, stored_event(bucket, "notes.txt", "text/plain"))
    assert answer.status_code == 204
    assert answer.data == b""
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="thumbnails/")
    assert listed.get("KeyCount", 0) == 0


def test_other_event_types_are_ignored(client: FlaskClient) -> None:
    """Events other than object.stored (e.g. its own reply) are acknowledged and ignored."""
    event = binding.new_event(type="dev.knfn.thumbnail.created", source="/x", data={}, id="1")
    answer = deliver(client, event)
    assert answer.status_code == 204
    assert answer.data == b""


def test_corrupt_image_is_422_naming_the_object(
    client: FlaskClient, s3_client: Any, bucket: str
) -> None:
    """Bytes that are not an image give 422 (not retried by a broker) naming bucket and key."""
    s3_client.put_object(Bucket=bucket, Key="bad.png", Body=b"\x89PNG\r\n\x1a\n garbage")
    answer = deliver(client, stored_event(bucket, "bad.png", "image/png"))
    assert answer.status_code == 422
    document = answer.get_json()
    assert document["error"].startswith("cannot read the image")
    assert (document["bucket"], document["key"]) == (bucket, "bad.png")


def test_truncated_image_is_422(client: FlaskClient, s3_client: Any, bucket: str) -> None:
    """A PNG cut in half is as unreadable as garbage: 422."""
    whole = image_bytes((200, 200))
    s3_client.put_object(Bucket=bucket, Key="half.png", Body=whole[: len(whole) // 2])
    answer = deliver(client, stored_event(bucket, "half.png", "image/png"))
    assert answer.status_code == 422


def test_missing_object_is_404(client: FlaskClient, bucket: str) -> None:
    """An event about an object that is not in S3 gives 404 naming it."""
    answer = deliver(client, stored_event(bucket, "gone.png", "image/png"))
    assert answer.status_code == 404
    assert answer.get_json()["key"] == "gone.png"


def test_event_data_missing_fields_is_422(client: FlaskClient) -> None:
    """object.stored data without bucket/key is 422 listing what is missing."""
    event = binding.new_event(
        type="dev.knfn.object.stored", source="/s", data={"content_type": "image/png"}, id="1"
    )
    answer = deliver(client, event)
    assert answer.status_code == 422
    assert answer.get_json()["problems"] == ["missing bucket", "missing key"]


def test_malformed_cloudevent_is_400(client: FlaskClient) -> None:
    """A POST missing ce-source is 400 naming the header."""
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "dev.knfn.object.stored"}
    answer = client.post("/", data=b"{}", headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "missing required header ce-source" in answer.get_json()["error"]


def test_s3_down_is_503(start: Any, bucket: str) -> None:
    """With S3 unreachable the delivery fails with 503, which a broker retries."""
    client = start(S3_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}").client()
    answer = deliver(client, stored_event(bucket, "x.png", "image/png"))
    assert answer.status_code == 503


def test_readme_documents_every_variable(start: Any) -> None:
    """Every env var the function reads appears in its README."""
    start()
    module = load_function(SOURCE, "thumbnail").module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []
