"""The session's backing services are real servers: SQL and S3 round trips."""

from __future__ import annotations

from typing import Any

import psycopg


def test_postgres_answers_sql_and_has_migrations(database_url: str) -> None:
    """The application database answers SQL and records applied migrations."""
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
    assert names == sorted(names)


def test_s3_stores_and_returns_bytes(s3_client: Any, bucket: str) -> None:
    """An object put into a fresh bucket comes back byte for byte."""
    s3_client.put_object(Bucket=bucket, Key="a/b.bin", Body=b"\x00\x01payload")
    got = s3_client.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read()
    assert got == b"\x00\x01payload"


def test_signed_list_names_the_buckets_and_refuses_wrong_keys(
    s3_env: dict[str, str], bucket: str
) -> None:
    """knfn's own signed ListBuckets (no boto3) sees a created bucket; a wrong secret gets None."""
    from knfn.backing import s3

    endpoint = s3_env["S3_ENDPOINT_URL"]
    creds = s3.Credentials(s3_env["AWS_ACCESS_KEY_ID"], s3_env["AWS_SECRET_ACCESS_KEY"])
    names = s3.bucket_names(endpoint, creds)
    assert names is not None and bucket in names
    assert s3.answers(endpoint, creds)
    wrong = s3.Credentials(creds.access_key, creds.secret_key + "x")
    assert s3.bucket_names(endpoint, wrong) is None
    assert not s3.answers(endpoint, wrong)
