"""``knfn admin``: the one-off admin processes, against the running backing services."""

from __future__ import annotations

from kit import admin as kit_admin

from knfn.backing.services import BackingEnv
from knfn.settings import Settings


def migrate(settings: Settings, backing: BackingEnv) -> list[str]:
    """Apply postgres/migrations to the application database; returns what was applied."""
    migrations = kit_admin.discover(settings.migrations_dir)
    return kit_admin.migrate(backing.database_url, migrations)


def buckets(backing: BackingEnv, names: list[str]) -> list[str]:
    """Create the configured buckets that are missing; returns what was created."""
    client = kit_admin.s3_client_from_env(backing.function_env())
    return kit_admin.ensure_buckets(client, names)
