"""kit.db: the lazily opened Postgres pool, against a real Postgres and against none."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kit import config, db, shutdown
from kit.testing import closed_port


@pytest.fixture
def database(database_url: str) -> Iterator[db.Database]:
    made = db.Database(config.load(db.DatabaseSettings, {"DATABASE_URL": database_url}))
    yield made
    made.close()


def count_marks(database: db.Database, consumer: str) -> int:
    with database.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM processed_events WHERE consumer = %s", (consumer,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_pool_opens_on_first_use(database: db.Database) -> None:
    """Nothing connects until a connection is asked for."""
    assert not database.is_open
    with database.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert database.is_open


def test_connection_commits_on_success(database: db.Database) -> None:
    """Work done in the block is committed when it ends normally."""
    consumer = f"test-{uuid.uuid4()}"
    with database.connection() as conn:
        conn.execute(
            "INSERT INTO processed_events (consumer, source, id, type) VALUES (%s, 's', 'i', 't')",
            (consumer,),
        )
    assert count_marks(database, consumer) == 1


def test_connection_rolls_back_on_error(database: db.Database) -> None:
    """An exception in the block rolls the whole transaction back."""
    consumer = f"test-{uuid.uuid4()}"
    with pytest.raises(RuntimeError), database.connection() as conn:
        conn.execute(
            "INSERT INTO processed_events (consumer, source, id, type) VALUES (%s, 's', 'i', 't')",
            (consumer,),
        )
        raise RuntimeError("abort")
    assert count_marks(database, consumer) == 0


def test_unreachable_database_is_a_503_within_the_timeout() -> None:
    """Nothing listening at DATABASE_URL gives DatabaseUnavailable (503) after the timeout."""
    url = f"postgresql://u:p@127.0.0.1:{closed_port()}/app"
    database = db.Database(config.load(db.DatabaseSettings, {"DATABASE_URL": url}), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(db.DatabaseUnavailable) as caught, database.connection():
        pass
    assert time.monotonic() - started < 4
    assert caught.value.status == 503
    database.close()


def test_close_closes_the_pool_and_unregisters(database: db.Database) -> None:
    """close() closes the pool and removes it from the shutdown list; reuse reopens."""
    with database.connection():
        pass
    name = "postgres pool db"
    assert name in shutdown.registered()
    before = shutdown.registered().count(name)
    database.close()
    assert not database.is_open
    assert shutdown.registered().count(name) == before - 1
    with database.connection() as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_database_url_is_validated_and_never_echoed() -> None:
    """A malformed DATABASE_URL is a ConfigError that does not print the URL (a secret)."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(db.DatabaseSettings, {"DATABASE_URL": "postgresql://u:pw@h:notaport/x x=y"})
    assert "pw" not in str(caught.value)
    assert "DATABASE_URL='<secret>'" in str(caught.value)
