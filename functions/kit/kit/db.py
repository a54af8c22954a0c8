"""Postgres as a backing service attached by DATABASE_URL (factor 4), through a small pool.

The pool opens on first use (never in the parent process the framework forks from), keeps
one idle connection, checks a connection before lending it (so a restarted database costs
one failed check, not one failed request), and is closed at shutdown. A database that cannot
be reached within the timeout becomes `DatabaseUnavailable` (503).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool

from kit import config, shutdown
from kit.errors import ServiceUnavailable


def postgres_url(raw: str) -> str:
    """A libpq connection string: a postgres:// URL or key=value pairs."""
    try:
        psycopg.conninfo.conninfo_to_dict(raw)
    except psycopg.ProgrammingError:
        raise ValueError("is not a valid Postgres connection string") from None
    return raw


@dataclass(frozen=True)
class DatabaseSettings:
    """Where Postgres is; the URL holds the password, so it is never echoed."""

    url: Annotated[
        str, config.env("DATABASE_URL", postgres_url, secret=True, doc="app database URL")
    ]


class DatabaseUnavailable(ServiceUnavailable):
    """Postgres could not be reached, or the connection broke mid-request."""


class Database:
    """A lazily opened `psycopg_pool.ConnectionPool`."""

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 5.0,
        name: str = "db",
    ) -> None:
        self.settings = settings
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.name = name
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None

    @property
    def pool(self) -> ConnectionPool:
        """The pool, opened on first use and closed at shutdown."""
        with self._lock:
            if self._pool is None:
                pool = ConnectionPool(
                    self.settings.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.timeout,
                    check=ConnectionPool.check_connection,
                    name=self.name,
                    open=False,
                )
                pool.open(wait=False)
                self._pool = pool
                shutdown.register(f"postgres pool {self.name}", self.close)
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(
                f"database unavailable: {error}".strip(), database=self.name
            ) from error

    def close(self) -> None:
        """Close the pool (waiting briefly for its workers); a later use opens a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            shutdown.unregister(self.close)
            pool.close(timeout=2.0)

    @property
    def is_open(self) -> bool:
        """Whether a pool is currently open."""
        return self._pool is not None
