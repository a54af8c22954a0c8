"""query: catalog rows from a real Postgres, with presigned URLs that a real S3 honours."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import requests
from flask.testing import FlaskClient
from kit import config, shutdown
from kit.testing import FunctionLoader, LoadedFunction, function_source

SOURCE = function_source(__file__)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def add_object(
    database_url: str,
    s3_client: Any,
    bucket: str,
    key: str,
    body: bytes,
    minutes: int,
    thumbnail: bytes | None = None,
) -> None:
    """Store an object (and maybe its thumbnail) in S3 and its row in the catalog."""
    s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain")
    thumbnail_key = None
    if thumbnail is not None:
        thumbnail_key = f"thumbnails/{key}"
        s3_client.put_object(Bucket=bucket, Key=thumbnail_key, Body=thumbnail)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO objects (bucket, key, size, content_type, sha256, thumbnail_key,"
            " created_at, updated_at) VALUES (%s, %s, %s, 'text/plain', %s, %s, %s, %s)",
            (
                bucket,
                key,
                len(body),
                hashlib.sha256(body).hexdigest(),
                thumbnail_key,
                EPOCH + timedelta(minutes=minutes),
                EPOCH + timedelta(minutes=minutes),
            ),
        )


@pytest.fixture
def start(
    function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FunctionLoader]:
    yield FunctionLoader(monkeypatch, SOURCE, "query")
    shutdown.close_all()


@pytest.fixture
def client(start: Any) -> FlaskClient:
    loaded: LoadedFunction = start()
    return loaded.client()


@pytest.fixture
def five(database_url: str, s3_client: Any, bucket: str) -> list[str]:
    """Five objects o0..o4, o4 the newest; o2 has a thumbnail."""
    for i in range(5):
        thumb = b"thumb-2" if i == 2 else None
        add_object(database_url, s3_client, bucket, f"o{i}.txt", f"body {i}".encode(), i, thumb)
    return [f"o{i}.txt" for i in reversed(range(5))]


def test_list_is_newest_first_with_presigned_urls(
    client: FlaskClient, five: list[str], bucket: str
) -> None:
    """GET / lists the bucket newest first; each url fetches the object's bytes."""
    document = client.get("/").get_json()
    assert document["bucket"] == bucket
    assert [item["key"] for item in document["items"]] == five
    assert document["next_cursor"] is None
    newest = document["items"][0]
    assert newest["size"] == len(b"body 4")
    assert newest["created_at"].startswith("2024-01-01T00:04:00")
    assert requests.get(newest["url"], timeout=5).content == b"body 4"
    assert "thumbnail_url" not in newest


def test_thumbnail_url_fetches_the_thumbnail(client: FlaskClient, five: list[str]) -> None:
    """An entry with a thumbnail_key has a working thumbnail_url."""
    item = client.get("/objects/o2.txt").get_json()
    assert item["thumbnail_key"] == "thumbnails/o2.txt"
    assert requests.get(item["thumbnail_url"], timeout=5).content == b"thumb-2"


def test_presigned_urls_expire_as_configured(start: Any, five: list[str]) -> None:
    """PRESIGN_EXPIRES_SECONDS sets the URLs' X-Amz-Expires and the entry's expires_in."""
    client = start(PRESIGN_EXPIRES_SECONDS="60").client()
    item = client.get("/objects/o1.txt").get_json()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(item["url"]).query)
    assert query["X-Amz-Expires"] == ["60"]
    assert item["expires_in"] == 60


def test_cursor_pages_through_everything_once(client: FlaskClient, five: list[str]) -> None:
    """Following next_cursor with limit=2 visits every object once, in order."""
    seen: list[str] = []
    url = "/objects?limit=2"
    pages = 0
    while url:
        document = client.get(url).get_json()
        seen += [item["key"] for item in document["items"]]
        pages += 1
        cursor = document["next_cursor"]
        url = f"/objects?limit=2&cursor={cursor}" if cursor else ""
    assert seen == five
    assert pages == 3


def test_offset_pages_too(client: FlaskClient, five: list[str]) -> None:
    """?offset= skips rows and next_offset says where the next page starts."""
    document = client.get("/objects?limit=2&offset=2").get_json()
    assert [item["key"] for item in document["items"]] == five[2:4]
    assert document["next_offset"] == 4
    last = client.get("/objects?limit=2&offset=4").get_json()
    assert [item["key"] for item in last["items"]] == five[4:]
    assert last["next_offset"] is None


def test_only_the_configured_bucket_is_listed(
    client: FlaskClient, database_url: str, s3_client: Any, bucket: str
) -> None:
    """Rows of other buckets never show up."""
    add_object(database_url, s3_client, bucket, "mine.txt", b"m", 1)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO objects (bucket, key) VALUES (%s, 'theirs.txt')", (f"{bucket}-other",)
        )
    assert [i["key"] for i in client.get("/").get_json()["items"]] == ["mine.txt"]


def test_unknown_key_is_404(client: FlaskClient, bucket: str) -> None:
    """GET /objects/<key> for a key the catalog lacks is 404 naming it."""
    answer = client.get("/objects/missing.png")
    assert answer.status_code == 404
    assert answer.get_json()["key"] == "missing.png"
    assert "missing.png" in answer.get_json()["error"]


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1"])
def test_bad_limit_is_400(client: FlaskClient, limit: str) -> None:
    """A limit outside 1..100 or not a number is 400 naming the parameter."""
    answer = client.get(f"/objects?limit={limit}")
    assert answer.status_code == 400
    assert answer.get_json()["parameter"] == "limit"
    assert "limit must be an integer from 1 to 100" in answer.get_json()["error"]


def test_bad_cursor_is_400(client: FlaskClient) -> None:
    """A cursor this function did not make is 400."""
    answer = client.get("/objects?cursor=definitely-not-a-cursor")
    assert answer.status_code == 400
    assert answer.get_json()["parameter"] == "cursor"


def test_cursor_and_offset_together_is_400(client: FlaskClient, five: list[str]) -> None:
    """Asking for both paging styles at once is refused."""
    cursor = client.get("/objects?limit=1").get_json()["next_cursor"]
    answer = client.get(f"/objects?cursor={cursor}&offset=1")
    assert answer.status_code == 400
    assert "either cursor or offset" in answer.get_json()["error"]


def test_post_is_405_and_unknown_paths_404(client: FlaskClient) -> None:
    """query is read-only, and only /, /objects and /objects/<key> exist."""
    assert client.post("/objects").status_code == 405
    answer = client.get("/elsewhere")
    assert answer.status_code == 404
    assert "no route for /elsewhere" in answer.get_json()["error"]


def test_readme_documents_every_variable(start: Any) -> None:
    """Every env var the function reads appears in its README."""
    module = start().module
    readme = (SOURCE.parent / "README.md").read_text()
    assert [s.name for s in config.variables(module.Settings) if s.name not in readme] == []


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/objects?limit=" + "9" * 5000, "limit"),
        ("/objects?offset=" + "9" * 30, "offset"),
        ("/objects?offset=99999999999999999999", "offset"),
        ("/objects?cursor=a%00b", "cursor"),
        ("/objects?cursor=" + "WyIyMDI0LTAxLTAxIiwgImFcdTAwMDBiIl0", "cursor"),
        ("/objects?a%00b=1&limit=1", None),
        ("/objects/a%00b", "NUL"),
    ],
)
def test_hostile_input_is_400_not_500(client: FlaskClient, url: str, named: str | None) -> None:
    """Huge numbers, NUL in keys, cursors and query keys: 400 naming the problem, or fine."""
    answer = client.get(url)
    if named is None:
        assert answer.status_code == 200
        return
    assert answer.status_code == 400, answer.get_data()
    assert named in json.dumps(answer.get_json())
