"""catalog: pipeline events upserted into a real Postgres, each event applied exactly once."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from kit import binding, config, shutdown
from kit.testing import FunctionLoader, LoadedFunction, closed_port, function_source
from psycopg.rows import dict_row
from werkzeug.test import TestResponse

SOURCE = function_source(__file__)
SHA = hashlib.sha256(b"x").hexdigest()


def unique(prefix: str) -> str:
    """Event ids are global to (source, id), so each test makes its own."""
    return f"{prefix}-{uuid.uuid4()}"


def stored(bucket: str, key: str = "a.png", id: str = "", **data: Any) -> CloudEvent:
    fields = {"bucket": bucket, "key": key, "size": 10, "content_type": "image/png", "sha256": SHA}
    return binding.new_event(
        type="dev.knfn.object.stored",
        source="/functions/ingest",
        subject=key,
        data={**fields, **data},
        id=id or unique("s"),
    )


def thumbnail_created(bucket: str, key: str = "a.png", id: str = "") -> CloudEvent:
    data = {
        "bucket": bucket,
        "key": key,
        "thumbnail_key": f"thumbnails/{key}",
        "width": 128,
        "height": 96,
    }
    return binding.new_event(
        type="dev.knfn.thumbnail.created",
        source="/functions/thumbnail",
        subject=key,
        data=data,
        id=id or unique("t"),
    )


def deliver(client: FlaskClient, event: CloudEvent) -> TestResponse:
    message = binding.to_binary(event)
    return client.post("/", data=message.body, headers=dict(message.headers))


def rows(database_url: str, bucket: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM objects WHERE bucket = %s ORDER BY key", (bucket,)
        ).fetchall()


def marks(database_url: str, source: str, id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM processed_events"
            " WHERE consumer = 'catalog' AND source = %s AND id = %s",
            (source, id),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def start(
    function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FunctionLoader]:
    yield FunctionLoader(monkeypatch, SOURCE, "catalog")
    shutdown.close_all()


@pytest.fixture
def client(start: Any) -> FlaskClient:
    loaded: LoadedFunction = start()
    return loaded.client()


def test_object_stored_inserts_a_row(client: FlaskClient, database_url: str, bucket: str) -> None:
    """object.stored upserts bucket, key, size, type and hash; the answer is an empty 204."""
    answer = deliver(client, stored(bucket))
    assert answer.status_code == 204
    assert answer.data == b""
    [row] = rows(database_url, bucket)
    assert (row["key"], row["size"], row["content_type"], row["sha256"]) == (
        "a.png",
        10,
        "image/png",
        SHA,
    )
    assert row["thumbnail_key"] is None


def test_thumbnail_then_stored_gives_one_complete_row(
    client: FlaskClient, database_url: str, bucket: str
) -> None:
    """Whichever event arrives first, the row ends with both the object and its thumbnail."""
    assert deliver(client, thumbnail_created(bucket)).status_code == 204
    [early] = rows(database_url, bucket)
    assert early["thumbnail_key"] == "thumbnails/a.png" and early["size"] is None
    assert deliver(client, stored(bucket)).status_code == 204
    [row] = rows(database_url, bucket)
    assert (row["size"], row["sha256"]) == (10, SHA)
    assert (row["thumbnail_key"], row["thumbnail_width"], row["thumbnail_height"]) == (
        "thumbnails/a.png",
        128,
        96,
    )


def test_the_same_event_twice_changes_nothing(
    client: FlaskClient, database_url: str, bucket: str
) -> None:
    """A redelivered event (same source and id) leaves the row untouched, updated_at too."""
    event = stored(bucket)
    deliver(client, event)
    [before] = rows(database_url, bucket)
    event.data = {**event.data, "size": 999}  # even if the payload differed
    assert deliver(client, event).status_code == 204
    [after] = rows(database_url, bucket)
    assert after == before
    assert marks(database_url, "/functions/ingest", event["id"]) == 1


def test_a_new_event_for_the_same_key_updates_it(
    client: FlaskClient, database_url: str, bucket: str
) -> None:
    """A different event id for the same object is applied, moving updated_at forward."""
    deliver(client, stored(bucket))
    [first] = rows(database_url, bucket)
    deliver(client, stored(bucket, size=11))
    [second] = rows(database_url, bucket)
    assert second["size"] == 11
    assert second["updated_at"] > first["updated_at"]
    assert second["created_at"] == first["created_at"]


def test_other_event_types_are_acknowledged_and_ignored(
    client: FlaskClient, database_url: str, bucket: str
) -> None:
    """An unrelated event is a 204 and writes nothing."""
    event = binding.new_event(type="dev.other", source="/x", data={"bucket": bucket})
    assert deliver(client, event).status_code == 204
    assert rows(database_url, bucket) == []
    assert marks(database_url, "/x", event["id"]) == 0


def test_invalid_event_data_is_422_and_nothing_is_recorded(
    client: FlaskClient, database_url: str, bucket: str
) -> None:
    """Wrongly typed fields give 422 naming them; the event is not marked processed."""
    event = stored(bucket, size="ten", sha256=None)
    answer = deliver(client, event)
    assert answer.status_code == 422
    assert answer.get_json()["problems"] == ["size has the wrong type", "missing sha256"]
    assert rows(database_url, bucket) == []
    assert marks(database_url, "/functions/ingest", event["id"]) == 0


def test_bad_hash_is_422(client: FlaskClient) -> None:
    """A sha256 that is not 64 hex digits is refused before it reaches the database."""
    answer = deliver(client, stored("b", sha256="xyz"))
    assert answer.status_code == 422
    assert "sha256" in answer.get_json()["error"]


def test_malformed_cloudevent_is_400(client: FlaskClient) -> None:
    """A structured event that is not JSON is 400 saying so."""
    answer = client.post(
        "/", data=b"{nope", headers={"Content-Type": "application/cloudevents+json"}
    )
    assert answer.status_code == 400
    assert "not valid JSON" in answer.get_json()["error"]


def test_database_down_is_503(start: Any, bucket: str) -> None:
    """With Postgres unreachable the delivery fails with 503, which a broker retries."""
    loaded = start(DATABASE_URL=f"postgresql://u:p@127.0.0.1:{closed_port()}/app")
    loaded.module.DATABASE.timeout = 1.0
    answer = deliver(loaded.client(), stored(bucket))
    assert answer.status_code == 503
    assert "database unavailable" in answer.get_json()["error"]


def test_readme_documents_every_variable(start: Any) -> None:
    """Every env var the function reads appears in its README."""
    module = start().module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []
