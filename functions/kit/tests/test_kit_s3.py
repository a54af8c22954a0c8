"""kit.s3: the object store against a real S3 server (SeaweedFS), and against none."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator

import pytest
import requests
from kit import config, s3, shutdown
from kit.testing import closed_port


@pytest.fixture
def store(s3_env: dict[str, str]) -> Iterator[s3.ObjectStore]:
    made = s3.ObjectStore(config.load(s3.S3Settings, s3_env))
    yield made
    made.close()


def test_put_then_get_round_trips_bytes_and_type(store: s3.ObjectStore, bucket: str) -> None:
    """What is put is read back byte for byte, with its content type."""
    store.put(bucket, "a/b.txt", b"hello", "text/plain")
    got = store.get(bucket, "a/b.txt")
    assert (got.body, got.content_type, got.size) == (b"hello", "text/plain", 5)
    assert store.exists(bucket, "a/b.txt")
    assert not store.exists(bucket, "a/none.txt")


def test_missing_object_is_not_found(store: s3.ObjectStore, bucket: str) -> None:
    """Reading an absent key raises ObjectNotFound (404) naming bucket and key."""
    with pytest.raises(s3.ObjectNotFound) as caught:
        store.get(bucket, "nope.png")
    assert caught.value.status == 404
    assert caught.value.fields == {"bucket": bucket, "key": "nope.png"}


def test_missing_bucket_is_an_s3_error(store: s3.ObjectStore) -> None:
    """A bucket that does not exist is an S3Error (502) naming the code S3 gave."""
    with pytest.raises(s3.S3Error) as caught:
        store.get("no-such-bucket-here", "k")
    assert caught.value.status == 502
    assert caught.value.fields["code"] == "NoSuchBucket"


def test_wrong_credentials_are_an_s3_error(s3_env: dict[str, str], bucket: str) -> None:
    """A wrong secret key is refused by S3 and reported with its error code."""
    env = {**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    wrong = s3.ObjectStore(config.load(s3.S3Settings, env))
    with pytest.raises(s3.S3Error, match="SignatureDoesNotMatch"):
        wrong.put(bucket, "k", b"x", "text/plain")
    wrong.close()


def test_presigned_url_fetches_the_object(store: s3.ObjectStore, bucket: str) -> None:
    """A presigned GET URL works with no credentials, and carries the expiry asked for."""
    store.put(bucket, "p.bin", b"\x00\x01\x02", "application/octet-stream")
    url = store.presign_get(bucket, "p.bin", 120)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Expires"] == ["120"]
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 200
    assert answer.content == b"\x00\x01\x02"


def test_presigned_urls_use_the_public_endpoint(s3_env: dict[str, str]) -> None:
    """With S3_PUBLIC_ENDPOINT_URL set, presigned URLs point there (for outside clients)."""
    env = {**s3_env, "S3_PUBLIC_ENDPOINT_URL": "https://files.example.com"}
    public = s3.ObjectStore(config.load(s3.S3Settings, env))
    url = public.presign_get("b", "k.png", 60)
    assert url.startswith("https://files.example.com/b/k.png?")


def test_s3_down_is_detected_within_seconds(s3_env: dict[str, str]) -> None:
    """An endpoint with nothing listening gives S3Unavailable (503) in a couple of seconds."""
    env = {**s3_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    store = s3.ObjectStore(config.load(s3.S3Settings, env))
    started = time.monotonic()
    with pytest.raises(s3.S3Unavailable) as caught:
        store.put("b", "k", b"x", "text/plain")
    assert time.monotonic() - started < 3
    assert caught.value.status == 503
    assert "S3 is unavailable at http://127.0.0.1:" in caught.value.message
    store.close()


def test_client_is_made_lazily_and_registered_for_shutdown(store: s3.ObjectStore) -> None:
    """No client exists until first use; then it is registered and close() releases it."""
    before = shutdown.registered().count("s3")
    assert store._client is None
    assert store.client is store.client
    assert shutdown.registered().count("s3") == before + 1
    store.close()
    assert store._client is None
    assert shutdown.registered().count("s3") == before
