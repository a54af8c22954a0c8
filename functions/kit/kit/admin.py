"""Admin processes (factor 12): schema migrations and bucket setup, run as one-off commands.

The same code runs locally (``knfn admin migrate|buckets``) and in the cluster's Jobs
(``python -m kit.admin migrate --dir /app/migrations``), reading the same env.

Migrations are ``NNNN_name.sql`` files applied in name order, each in its own transaction and
recorded in ``schema_migrations`` with a checksum; an applied file that changed is an error
(migrations are immutable once applied). An advisory lock makes concurrent runs safe.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

# An arbitrary constant that names "schema migration" for pg_advisory_xact_lock.
_LOCK_KEY = 0x6B6E666E


class AdminError(Exception):
    """A migration or bucket could not be applied; the message names which and why."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """The migrations in directory, in name order."""
    if not directory.is_dir():
        raise AdminError(f"migrations directory {directory} does not exist")
    return [Migration(p.name, p.read_text()) for p in sorted(directory.glob("*.sql"))]


def migrate(database_url: str, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations not applied yet; returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in migrations:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                row = conn.execute(
                    "SELECT checksum FROM schema_migrations WHERE name = %s", (migration.name,)
                ).fetchone()
                if row is not None:
                    if row[0] != migration.checksum:
                        raise AdminError(
                            f"migration {migration.name} changed after it was applied "
                            "(add a new migration instead of editing an applied one)"
                        )
                    continue
                try:
                    conn.execute(migration.sql.encode())
                except psycopg.Error as exc:
                    raise AdminError(f"migration {migration.name} failed: {exc}") from exc
                conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                    (migration.name, migration.checksum),
                )
                applied_now.append(migration.name)
    return applied_now


def ensure_buckets(s3: Any, names: Iterable[str]) -> list[str]:
    """Create the buckets that do not exist yet; returns the names created now."""
    from botocore.exceptions import ClientError

    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    created: list[str] = []
    for name in names:
        if name in existing:
            continue
        try:
            s3.create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                continue
            raise AdminError(f"bucket {name!r} could not be created: {exc}") from exc
        created.append(name)
    return created


def bucket_names(env: Mapping[str, str]) -> list[str]:
    """The configured buckets: S3_BUCKET, comma-separated for several (default ``uploads``)."""
    return [n.strip() for n in env.get("S3_BUCKET", "uploads").split(",") if n.strip()]


def s3_client_from_env(env: Mapping[str, str]) -> Any:
    """A path-style S3 client from the standard variables."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env.get("S3_ENDPOINT_URL") or None,
        region_name=env.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``python -m kit.admin migrate --dir DIR`` or ``python -m kit.admin buckets``."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m kit.admin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="apply postgres migrations (DATABASE_URL)")
    mig.add_argument("--dir", type=Path, default=Path("/app/migrations"))
    sub.add_parser("buckets", help="create the S3_BUCKET buckets (S3_* and AWS_* env)")
    args = parser.parse_args(argv)
    try:
        if args.command == "migrate":
            url = env.get("DATABASE_URL")
            if not url:
                raise AdminError("DATABASE_URL is not set")
            done = migrate(url, discover(args.dir))
            print(f"applied {len(done)} migration(s)" + (": " + ", ".join(done) if done else ""))
        else:
            made = ensure_buckets(s3_client_from_env(env), bucket_names(env))
            print(f"created {len(made)} bucket(s)" + (": " + ", ".join(made) if made else ""))
    except (AdminError, psycopg.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
