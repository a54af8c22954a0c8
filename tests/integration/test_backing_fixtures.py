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
