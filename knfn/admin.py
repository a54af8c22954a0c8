"""``knfn admin``: the one-off admin processes, against the running backing services.

The steps are the project's own code, the function kit's ``kit.admin`` (the same module the
cluster's Jobs run), so the kit is the project's requirement, not knfn's: ``make setup``
installs it beside knfn, a plain ``pip install`` of knfn does not, and a step then says so. It
is imported when a step runs, not with this module: ``knfn dev`` imports it on start-up, where
every 100 ms counts, and runs the steps in a thread beside the rest of its start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from knfn.backing import s3
from knfn.backing.services import BackingEnv
from knfn.errors import KnfnError
from knfn.settings import Settings


@contextlib.contextmanager
def _needs_kit(step: str) -> Iterator[None]:
    """Around the kit's import: KnfnError naming the step when the kit is not installed."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name != "kit":
            raise
        raise KnfnError(
            f"{step}: the admin steps run the project's function kit (functions/kit), which is "
            "not installed here: pip install ./functions/kit (make setup does)"
        ) from None


def migrate(settings: Settings, backing: BackingEnv) -> list[str]:
    """Apply postgres/migrations to the application database; returns what was applied.

    A project without a postgres/migrations folder has nothing to apply.
    """
    if not settings.migrations_dir.is_dir():
        return []
    import psycopg

    with _needs_kit("migrate"):
        from kit import admin as kit_admin

    try:
        migrations = kit_admin.discover(settings.migrations_dir)
        return kit_admin.migrate(backing.database_url, migrations)
    except (kit_admin.AdminError, psycopg.Error) as exc:
        raise KnfnError(f"migrate: {exc}") from exc


def buckets(backing: BackingEnv, names: list[str]) -> list[str]:
    """Create the configured buckets that are missing; returns what was created.

    A signed list first (knfn's own, :func:`knfn.backing.s3.bucket_names`): when every bucket
    is there, as on every start after the first, the kit and boto3 are not imported at all.
    """
    creds = s3.Credentials(backing.s3_access_key, backing.s3_secret_key)
    existing = s3.bucket_names(
        backing.s3_endpoint_url, creds, timeout=5.0, region=backing.s3_region
    )
    if existing is not None and existing.issuperset(names):
        return []
    with _needs_kit("buckets"):
        from kit import admin as kit_admin

    client = kit_admin.s3_client_from_env(backing.function_env())
    try:
        return kit_admin.ensure_buckets(client, names)
    except kit_admin.AdminError as exc:
        raise KnfnError(f"buckets: {exc}") from exc
