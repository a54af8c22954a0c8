"""dead-letters: dead-lettered events stored in a real Postgres, listed back as JSON."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from kit import binding, config, shutdown
from kit.testing import FunctionLoader, LoadedFunction, function_source
from psycopg.rows import dict_row

SOURCE = function_source(__file__)


def dead_letter(source: str, **extensions: Any) -> CloudEvent:
    """An object.stored event as a dispatcher dead-letters it after thumbnail answered 500."""
    defaults = {
        "knativeerrordest": "http://thumbnail.default.svc.cluster.local",
        "knativeerrorcode": "500",
        "knativeerrordata": base64.b64encode(b'{"error": "boom"}').decode(),
    }
    return binding.new_event(
        type="dev.knfn.object.stored",
        source=source,
        subject="k.png",
        data={"key": "k.png"},
        id=str(uuid.uuid4()),
        **{**defaults, **extensions},
    )


def stored_row(database_url: str, source: str, id: str) -> dict[str, Any] | None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM dead_letters WHERE source = %s AND id = %s", (source, id)
        ).fetchone()


@pytest.fixture
def source() -> str:
    """A source unique to the test, so rows from other tests never interfere."""
    return f"/test/{uuid.uuid4()}"


@pytest.fixture
def start(
    function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FunctionLoader]:
    yield FunctionLoader(monkeypatch, SOURCE, "dead_letters")
    shutdown.close_all()


@pytest.fixture
def client(start: Any) -> FlaskClient:
    loaded: LoadedFunction = start()
    return loaded.client()


def post(client: FlaskClient, event: CloudEvent, structured: bool = False) -> Any:
    message = binding.to_structured(event) if structured else binding.to_binary(event)
    return client.post("/", data=message.body, headers=dict(message.headers))


def test_dead_letter_is_stored_with_the_error_decoded(
    client: FlaskClient, database_url: str, source: str
) -> None:
    """The event is stored with attributes, extensions, data, and the error in columns."""
    event = dead_letter(source)
    answer = post(client, event)
    assert answer.status_code == 204
    assert answer.data == b""
    row = stored_row(database_url, source, event["id"])
    assert row is not None
    assert (row["type"], row["subject"]) == ("dev.knfn.object.stored", "k.png")
    assert row["error_dest"] == "http://thumbnail.default.svc.cluster.local"
    assert row["error_code"] == 500
    assert row["error_data"] == '{"error": "boom"}'
    assert row["extensions"]["knativeerrorcode"] == "500"
    assert row["attributes"]["id"] == event["id"]
    assert (row["data_encoding"], row["data_json"]) == ("json", {"key": "k.png"})


def test_structured_dead_letter_with_binary_data(
    client: FlaskClient, database_url: str, source: str
) -> None:
    """A structured event with non-UTF-8 data is stored as base64 text."""
    event = CloudEvent(
        {"type": "t", "source": source, "id": "b-1", "knativeerrorcode": "404"}, b"\xff\x00"
    )
    assert post(client, event, structured=True).status_code == 204
    row = stored_row(database_url, source, "b-1")
    assert row is not None
    assert (row["data_encoding"], row["data_text"]) == ("base64", "/wA=")
    assert row["error_code"] == 404
    assert row["error_dest"] is None


def test_odd_error_attributes_are_kept_as_sent(
    client: FlaskClient, database_url: str, source: str
) -> None:
    """A non-numeric code becomes NULL; error data that is not base64 is kept verbatim."""
    event = dead_letter(source, knativeerrorcode="n/a", knativeerrordata="not base64!")
    assert post(client, event).status_code == 204
    row = stored_row(database_url, source, event["id"])
    assert row is not None
    assert row["error_code"] is None
    assert row["error_data"] == "not base64!"
    assert row["extensions"]["knativeerrorcode"] == "n/a"


def test_storing_is_idempotent_on_source_and_id(
    client: FlaskClient, database_url: str, source: str
) -> None:
    """The same (source, id) twice keeps one row, the first one."""
    event = dead_letter(source)
    post(client, event)
    first = stored_row(database_url, source, event["id"])
    event["knativeerrorcode"] = "503"
    assert post(client, event).status_code == 204
    assert stored_row(database_url, source, event["id"]) == first


def test_get_lists_newest_first(client: FlaskClient, source: str) -> None:
    """GET / returns stored dead letters newest first, with data and error decoded."""
    older, newer = dead_letter(source), dead_letter(source)
    post(client, older)
    post(client, newer)
    document = client.get("/?limit=100").get_json()
    ours = [item for item in document["items"] if item["source"] == source]
    assert [item["id"] for item in ours] == [newer["id"], older["id"]]
    assert ours[0]["data"] == {"key": "k.png"}
    assert ours[0]["error"] == {
        "dest": "http://thumbnail.default.svc.cluster.local",
        "code": 500,
        "data": '{"error": "boom"}',
    }
    assert document["limit"] == 100


def test_get_honours_limit(client: FlaskClient, source: str) -> None:
    """?limit=1 returns one item."""
    post(client, dead_letter(source))
    post(client, dead_letter(source))
    assert len(client.get("/?limit=1").get_json()["items"]) == 1


@pytest.mark.parametrize("limit", ["0", "101", "x", "9" * 5000, "²"])
def test_bad_limit_is_400(client: FlaskClient, limit: str) -> None:
    """A limit outside 1..100 is 400 naming the parameter."""
    answer = client.get(f"/?limit={limit}")
    assert answer.status_code == 400
    assert answer.get_json()["parameter"] == "limit"


def test_malformed_event_is_400(client: FlaskClient) -> None:
    """A POST that is not a CloudEvent is 400 naming the missing headers."""
    answer = client.post("/", data=b"{}", headers={"ce-specversion": "1.0"})
    assert answer.status_code == 400
    assert "missing required header ce-id" in answer.get_json()["error"]


def test_put_is_405(client: FlaskClient) -> None:
    """Only GET, HEAD and POST are answered."""
    answer = client.put("/")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, HEAD, POST"


def test_readme_documents_every_variable(start: Any) -> None:
    """Every env var the function reads appears in its README."""
    module = start().module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []
