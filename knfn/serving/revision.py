"""Revisions: immutable snapshots of a Service's code and template, named as Knative names them.

A revision is identified by a digest of the function's source folder (what the image build copies:
tests and caches left out) and of ``spec.template``. The same digest is the same revision; a new
one is named ``<service>-0000N`` (or ``spec.template.metadata.name``), its code copied to
``<state>/revisions/<namespace>/<name>/`` so that it keeps running unchanged while the working
tree moves on, and it is recorded in knfn's database so history survives restarts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from knfn.errors import KnfnError

# Left out of the digest and the snapshot exactly as the repository's .dockerignore leaves them
# out of the image, so that the revision is what the image holds: caches and bytecode anywhere,
# the function's own tests/ folder, and Python test modules.
IGNORED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
IGNORED_SUFFIXES = (".pyc", ".pyo")


def _is_ignored(rel: Path) -> bool:
    name = rel.name
    return (
        any(part in IGNORED_DIRS or part.endswith(".egg-info") for part in rel.parts)
        or rel.parts[0] == "tests"  # functions/*/tests/
        or name.endswith(IGNORED_SUFFIXES)
        or (name.startswith("test_") and name.endswith(".py"))  # functions/**/test_*.py
        or name.endswith("_test.py")  # functions/**/*_test.py
        or name == "conftest.py"
    )


def source_files(folder: Path) -> Iterator[Path]:
    """The files of a function folder that make up its image, in a stable order."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not _is_ignored(path.relative_to(folder)):
            yield path


def digest(folder: Path, template: Mapping[str, Any]) -> str:
    """sha256 over the source files (path and bytes) and the canonical JSON of the template."""
    h = hashlib.sha256()
    for path in source_files(folder):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(json.dumps(template, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def default_name(service: str, generation: int) -> str:
    """Knative's generated revision name: ``<service>-00001``."""
    return f"{service}-{generation:05d}"


@dataclass(frozen=True)
class Revision:
    namespace: str
    service: str
    name: str
    generation: int
    digest: str
    template: Mapping[str, Any]
    code: Path


SCHEMA = """
CREATE TABLE IF NOT EXISTS knfn_revisions (
    namespace  text NOT NULL,
    service    text NOT NULL,
    name       text NOT NULL,
    generation integer NOT NULL,
    digest     text NOT NULL,
    template   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name),
    UNIQUE (namespace, service, digest)
)
"""


class RevisionStore:
    """Revision history in knfn's own database, code snapshots under the state directory."""

    def __init__(self, database_url: str, snapshots: Path) -> None:
        self._url = database_url
        self._snapshots = snapshots
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(SCHEMA)

    def ensure(
        self,
        namespace: str,
        service: str,
        source: Path,
        template: Mapping[str, Any],
    ) -> Revision:
        """The revision for this code and template: the recorded one, or a new one."""
        want = digest(source, template)
        explicit = (template.get("metadata") or {}).get("name")
        with psycopg.connect(self._url) as conn, conn.transaction():
            # One writer at a time per service, so generations never collide.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{namespace}/{service}",))
            row = conn.execute(
                "SELECT name, generation FROM knfn_revisions"
                " WHERE namespace = %s AND service = %s AND digest = %s",
                (namespace, service, want),
            ).fetchone()
            if row is None:
                last = conn.execute(
                    "SELECT coalesce(max(generation), 0) FROM knfn_revisions"
                    " WHERE namespace = %s AND service = %s",
                    (namespace, service),
                ).fetchone()
                generation = int(last[0] if last else 0) + 1
                name = str(explicit) if explicit else default_name(service, generation)
                if (
                    explicit
                    and conn.execute(
                        "SELECT 1 FROM knfn_revisions WHERE namespace = %s AND name = %s",
                        (namespace, name),
                    ).fetchone()
                ):
                    raise KnfnError(
                        f"Service {service}: spec.template.metadata.name {name!r} already names "
                        "a revision with other code or template; give the new one a new name"
                    )
                conn.execute(
                    "INSERT INTO knfn_revisions"
                    " (namespace, service, name, generation, digest, template)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (namespace, service, name, generation, want, json.dumps(template)),
                )
            else:
                name, generation = str(row[0]), int(row[1])
        code = self._snapshot(namespace, name, source)
        return Revision(namespace, service, name, generation, want, template, code)

    def get(self, namespace: str, name: str) -> Revision | None:
        """A recorded revision by name (for traffic that pins an older one)."""
        with psycopg.connect(self._url) as conn:
            row = conn.execute(
                "SELECT service, generation, digest, template FROM knfn_revisions"
                " WHERE namespace = %s AND name = %s",
                (namespace, name),
            ).fetchone()
        if row is None:
            return None
        code = self._snapshots / namespace / name
        if not code.is_dir():
            return None
        return Revision(namespace, str(row[0]), name, int(row[1]), str(row[2]), row[3], code)

    def _snapshot(self, namespace: str, name: str, source: Path) -> Path:
        target = self._snapshots / namespace / name
        if target.is_dir():
            return target
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for path in source_files(source):
            dest = staging / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        staging.rename(target)
        return target
