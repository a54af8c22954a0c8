"""kit.admin: migrations applied once, in order, immutable once applied; buckets idempotent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kit import admin


def fresh_database(database_url: str) -> str:
    """A new empty database on the session's server, so migrations start from nothing."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url.rsplit("/", 1)[0] + "/" + name


def test_migrations_apply_in_order_once(tmp_path: Path, database_url: str) -> None:
    """Files apply in name order; a second run applies nothing."""
    url = fresh_database(database_url)
    (tmp_path / "0002_b.sql").write_text("INSERT INTO t VALUES ('second');")
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE t (v text);")
    assert admin.migrate(url, admin.discover(tmp_path)) == ["0001_a.sql", "0002_b.sql"]
    assert admin.migrate(url, admin.discover(tmp_path)) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("second",)]


def test_edited_applied_migration_is_an_error(tmp_path: Path, database_url: str) -> None:
    """Changing a file after it was applied stops the run, naming the file."""
    url = fresh_database(database_url)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE t (v text);")
    admin.migrate(url, admin.discover(tmp_path))
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE t (v int);")
    with pytest.raises(admin.AdminError, match=r"0001_a\.sql changed after it was applied"):
        admin.migrate(url, admin.discover(tmp_path))


def test_failing_migration_is_rolled_back_and_named(tmp_path: Path, database_url: str) -> None:
    """A broken file is named in the error and leaves no half-applied record."""
    url = fresh_database(database_url)
    (tmp_path / "0001_bad.sql").write_text("CREATE TABLE ok (v text); SELECT nope FROM nowhere;")
    with pytest.raises(admin.AdminError, match=r"0001_bad\.sql failed"):
        admin.migrate(url, admin.discover(tmp_path))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('ok')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


def test_buckets_are_created_once(s3_client: Any) -> None:
    """ensure_buckets creates what is missing and reports nothing the second time."""
    name = f"adm-{uuid.uuid4().hex[:12]}"
    assert admin.ensure_buckets(s3_client, [name]) == [name]
    assert admin.ensure_buckets(s3_client, [name]) == []


def test_cli_reports_missing_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m kit.admin migrate` without DATABASE_URL exits 1 and says so."""
    assert admin.main(["migrate", "--dir", "."], env={}) == 1
    assert "DATABASE_URL is not set" in capsys.readouterr().err
