"""Bring the backing services up, find them again, report and stop them.

Each service is either *external* (the user set ``DATABASE_URL`` / ``S3_ENDPOINT_URL``: knfn
starts nothing, factor 4) or *embedded* (started here, detached, recorded in
``.knfn/services.json`` so that ``knfn dev``, ``knfn services status`` and ``down`` find it).
"""

from __future__ import annotations

import enum
import json
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from knfn import ports
from knfn.backing import postgres, process, s3

# The settings and the addresses of the running services (config.py), importable from here.
from knfn.backing.config import DEFAULT_PG_PORT as DEFAULT_PG_PORT
from knfn.backing.config import DEFAULT_S3_PORT as DEFAULT_S3_PORT
from knfn.backing.config import DEV as DEV
from knfn.backing.config import SERVICES as SERVICES
from knfn.backing.config import BackingConfig as BackingConfig
from knfn.backing.config import BackingEnv as BackingEnv
from knfn.backing.config import Report as Report
from knfn.backing.config import redact as redact
from knfn.backing.config import redacted_env as redacted_env
from knfn.errors import PortInUseError


class Health(enum.Enum):
    """What one look at a server found."""

    UP = "up"
    DEAD = "dead"
    UNANSWERING = "unanswering"


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    kind: str
    state: str  # running | stopped | external
    url: str
    pid: int | None = None
    log: str | None = None


def _load(cfg: BackingConfig) -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(cfg.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data


# The two start threads record their server in one file: each read-modify-write holds this.
_STATE_LOCK = threading.Lock()


def _record(cfg: BackingConfig, name: str, rec: Mapping[str, Any]) -> None:
    """Write one server's record into the state file (the other's left as it is)."""
    with _STATE_LOCK:
        state = _load(cfg)
        state[name] = dict(rec)
        _save(cfg, state)


def _save(cfg: BackingConfig, state: Mapping[str, Mapping[str, Any]]) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(cfg.state_file)


def _port(preferred: int, explicit: bool, what: str, report: Report) -> int:
    if ports.is_free(preferred):
        return preferred
    if explicit:
        raise PortInUseError(f"{what}: port {preferred} is already in use (change or unset it)")
    chosen = ports.free_port()
    report(f"{what}: port {preferred} is in use, using {chosen}")
    return chosen


def _pg(cfg: BackingConfig, port: int) -> postgres.EmbeddedPostgres:
    return postgres.EmbeddedPostgres(
        data_dir=cfg.pg_data_dir,
        log_path=cfg.logs / "postgres.log",
        port=port,
        password=postgres.load_password(cfg.state_dir / "postgres" / "password"),
    )


def _s3(cfg: BackingConfig, port: int) -> s3.LocalS3:
    return s3.LocalS3(
        data_dir=cfg.state_dir / "s3",
        log_path=cfg.logs / "s3.log",
        port=port,
        credentials=s3.load_credentials(cfg.state_dir / "s3" / "credentials.json"),
        env=cfg.server_env,
    )


# How often a server is started again when one of its ports was taken in between the check and
# its bind (ports picked by knfn only; an explicit port is never swapped).
START_ATTEMPTS = 3


def preflight(cfg: BackingConfig) -> None:
    """Fail at once when an explicit port is held by anything but our own running server.

    Called before anything starts, so a busy KNFN_PG_PORT / KNFN_S3_PORT costs a line, not a
    half-started system.
    """
    state = _load(cfg)
    if not cfg.database_url and cfg.pg_port_explicit and not ports.is_free(cfg.pg_port):
        ours = postgres.postmaster(cfg.pg_data_dir)
        if ours is None or ours.port != cfg.pg_port:
            raise PortInUseError(
                f"postgres (KNFN_PG_PORT): port {cfg.pg_port} is already in use "
                "(change or unset it)"
            )
    if not cfg.s3_endpoint_url and cfg.s3_port_explicit and not ports.is_free(cfg.s3_port):
        rec = state.get("s3") or {}
        pid = int(rec.get("pid", 0))
        if not (pid and _s3(cfg, cfg.s3_port).is_ours(pid) and process.listens(pid, cfg.s3_port)):
            raise PortInUseError(
                f"s3 (KNFN_S3_PORT): port {cfg.s3_port} is already in use (change or unset it)"
            )


def up(cfg: BackingConfig, report: Report = lambda _: None, owner: str = SERVICES) -> BackingEnv:
    """Make sure both services run (or are external) and say how to reach them.

    The two servers start at once (:class:`Startup`); this waits for both.
    """
    return Startup(cfg, report, owner).wait()


class Startup:
    """Postgres and S3 coming up at the same time, each in a thread of its own.

    They are independent servers, so neither waits for the other; ``knfn dev`` goes on as soon
    as Postgres is up and waits for S3 only before it says it is ready.

    A running server is adopted only when it is provably ours: for Postgres the postmaster.pid
    of our data directory names a live postgres process; for S3 the recorded pid is a weed or
    minio process working in our data directory. A port that merely answers is never enough.

    ``owner`` is who asks: ``knfn dev`` (:data:`DEV`) stops at exit what it started, and also
    what an earlier ``knfn dev`` started and, killed, never stopped (the state lock says that
    one is gone); servers started by ``knfn services up`` are left running.

    When one of the two fails, :meth:`wait` stops the other if this start started it (a failed
    start leaves nothing running) and raises the failure.
    """

    def __init__(self, cfg: BackingConfig, report: Report, owner: str) -> None:
        self.cfg, self._report, self._owner = cfg, report, owner
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="knfn-backing")
        self._postgres = self._pool.submit(self._up_postgres)
        self._s3_adopted: Mapping[str, Any] | None = None
        # The S3 server is adopted, or its port chosen, before it starts: the endpoint the
        # functions are given (a port taken in between moves it: see :meth:`s3`).
        self._s3: Future[tuple[int, bool]]
        try:
            self.s3_planned = 0 if cfg.s3_endpoint_url else self._plan_s3()
            self._s3 = self._pool.submit(self._up_s3)
        except Exception as exc:  # reported by s3() and wait(), as a failed start would be
            self._s3 = Future()
            self._s3.set_exception(exc)
        self._pool.shutdown(wait=False)

    def postgres(self) -> int:
        """Block until Postgres is up (or external); its port (0 when external)."""
        return self._postgres.result()[0]

    def s3(self) -> int:
        """Block until S3 is up (or external); its port (0 when external)."""
        return self._s3.result()[0]

    def env(self, s3_port: int | None = None) -> BackingEnv:
        """How to reach both, once Postgres is up; S3 at s3_port (default: where it is)."""
        port = self.s3() if s3_port is None else s3_port
        return _reach(self.cfg, self.postgres(), port, self.started())

    def started(self) -> tuple[str, ...]:
        """The servers this start made (or inherited) that its owner stops at exit, so far;
        call :meth:`settle` first for the final answer."""
        return tuple(
            name
            for name, future in (("postgres", self._postgres), ("s3", self._s3))
            if future.done() and future.exception() is None and future.result()[1]
        )

    def settle(self) -> None:
        """Block until both starts have ended, failed or not."""
        wait([self._postgres, self._s3])

    def wait(self) -> BackingEnv:
        """Both up: how to reach them. On a failure, stop what this start started, raise."""
        self.settle()
        for future in (self._postgres, self._s3):
            if (failure := future.exception()) is not None:
                down(self.cfg, self.started())
                raise failure
        return self.env()

    def _up_postgres(self) -> tuple[int, bool]:
        """External by URL, else our data directory's running postmaster, else start."""
        cfg = self.cfg
        if cfg.database_url:
            return 0, False
        adopted = _adopt_pg(cfg)
        if adopted is not None:
            prior = (_load(cfg).get("postgres") or {}).get("owner", SERVICES)
            _record(cfg, "postgres", {
                "pid": adopted.pid, "port": adopted.port, "kind": PG_KIND, "owner": prior
            })  # fmt: skip
            return adopted.port, self._owner == DEV and prior == DEV
        port = _port(cfg.pg_port, cfg.pg_port_explicit, "postgres (KNFN_PG_PORT)", self._report)
        pid, port = _start_retrying(
            lambda port: _pg(cfg, port).start().pid,
            port,
            cfg.pg_port_explicit,
            "postgres (KNFN_PG_PORT)",
            self._report,
        )
        _record(cfg, "postgres", {"pid": pid, "port": port, "kind": PG_KIND, "owner": self._owner})
        return port, True

    def _plan_s3(self) -> int:
        """Our recorded server's port when it is ours and up (adopted), else the port to start
        one on; a recorded server of ours that does not serve is stopped first."""
        cfg = self.cfg
        rec = _load(cfg).get("s3")
        if rec and _adoptable_s3(cfg, int(rec["pid"]), int(rec["port"])):
            self._s3_adopted = rec
            return int(rec["port"])
        if rec and _s3(cfg, int(rec["port"])).is_ours(int(rec["pid"])):
            # Ours but not serving: it cannot share the data directory with a new one.
            process.stop(int(rec["pid"]), grace=s3.STOP_GRACE.get(str(rec.get("kind")), 2.0))
        return _port(cfg.s3_port, cfg.s3_port_explicit, "s3 (KNFN_S3_PORT)", self._report)

    def _up_s3(self) -> tuple[int, bool]:
        """External by endpoint, else the adopted server, else start on the planned port."""
        cfg = self.cfg
        if cfg.s3_endpoint_url:
            return 0, False
        if self._s3_adopted is not None:
            return self.s3_planned, self._owner == DEV and self._s3_adopted.get("owner") == DEV
        pid, port = _start_retrying(
            lambda port: _s3(cfg, port).start().pid,
            self.s3_planned,
            cfg.s3_port_explicit,
            "s3 (KNFN_S3_PORT)",
            self._report,
            same_port_retry=True,
        )
        _record(
            cfg, "s3", {"pid": pid, "port": port, "kind": _s3(cfg, port).kind, "owner": self._owner}
        )
        return port, True


PG_KIND = "embedded-postgres"


def _adopt_pg(cfg: BackingConfig) -> postgres.Postmaster | None:
    """Our data directory's running postmaster when it serves us; a broken one is stopped."""
    found = postgres.postmaster(cfg.pg_data_dir)
    if found is None:
        return None
    server = _pg(cfg, found.port)
    if found.status == "ready" and process.listens(found.pid, found.port) and server.answers():
        server.secure_and_create()
        return found
    # Ours (it holds our data directory) but not serving: a new one could not start beside it.
    process.stop(found.pid, first=signal.SIGINT, grace=15.0)
    return None


def _adoptable_s3(cfg: BackingConfig, pid: int, port: int) -> bool:
    server = _s3(cfg, port)
    return (
        server.is_ours(pid)
        and process.listens(pid, port)
        and s3.answers(server.endpoint, server.credentials)
    )


def _start_retrying(
    start: Callable[[int], int],
    port: int,
    explicit: bool,
    what: str,
    report: Report,
    *,
    same_port_retry: bool = False,
) -> tuple[int, int]:
    """start(port) -> pid; when a port was taken in between, again on another free port.

    same_port_retry: the server binds ports of its own besides this one (SeaweedFS), so a clash
    may be on one of those; an explicit port is then tried again as it is.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start(port), port
        except (postgres.PortTaken, s3.PortTaken) as exc:
            if attempt == START_ATTEMPTS or (explicit and not same_port_retry):
                if explicit:
                    raise PortInUseError(f"{what}: {exc} (change or unset it)") from None
                raise
            if not explicit:
                chosen = ports.free_port()
                report(f"{what}: port {port} was taken while starting, using {chosen}")
                port = chosen
    raise AssertionError("unreachable")


def find(cfg: BackingConfig) -> BackingEnv | None:
    """How to reach services that are already up (or external), without starting any."""
    if any(row.state == "stopped" for row in status(cfg)):
        return None
    state = _load(cfg)
    return _reach(
        cfg,
        int(state.get("postgres", {}).get("port", 0)),
        int(state.get("s3", {}).get("port", 0)),
    )


def _reach(
    cfg: BackingConfig, pg_port: int, s3_port: int, started: tuple[str, ...] = ()
) -> BackingEnv:
    """The URLs and keys of the services: the external ones, else the embedded ones' ports."""
    if cfg.database_url:
        app_url = cfg.database_url
        knfn_url = cfg.knfn_database_url or cfg.database_url
    else:
        server = _pg(cfg, pg_port)
        app_url = server.url(postgres.APP_DATABASE)
        knfn_url = cfg.knfn_database_url or server.url(postgres.KNFN_DATABASE)
    if cfg.s3_endpoint_url:
        endpoint = cfg.s3_endpoint_url
        creds = s3.Credentials(cfg.s3_access_key or "", cfg.s3_secret_key or "")
    else:
        local = _s3(cfg, s3_port)
        endpoint, creds = local.endpoint, local.credentials
    return BackingEnv(
        database_url=app_url,
        knfn_database_url=knfn_url,
        s3_endpoint_url=endpoint,
        s3_access_key=creds.access_key,
        s3_secret_key=creds.secret_key,
        s3_region=cfg.s3_region,
        started=started,
    )


# -- health and restart (the supervisor's blocking half; see knfn.backing.supervise) -----------
def embedded(cfg: BackingConfig) -> tuple[str, ...]:
    """The services knfn runs itself (the others are external: not ours to watch)."""
    return tuple(
        name
        for name, external in (("postgres", cfg.database_url), ("s3", cfg.s3_endpoint_url))
        if not external
    )


def check(cfg: BackingConfig, name: str) -> Health:
    """Is the recorded server of name alive, ours and answering?"""
    rec = _load(cfg).get(name)
    if rec is None:
        return Health.DEAD
    pid, port = int(rec["pid"]), int(rec["port"])
    if name == "postgres":
        found = postgres.postmaster(cfg.pg_data_dir)
        if found is None or found.pid != pid:
            return Health.DEAD
        # A generous timeout: a busy machine must not make a healthy server look hung.
        return Health.UP if _pg(cfg, port).answers(timeout=3) else Health.UNANSWERING
    server = _s3(cfg, port)
    if not server.is_ours(pid):
        return Health.DEAD
    return Health.UP if s3.http_answers(server.endpoint) else Health.UNANSWERING


def restart(cfg: BackingConfig, name: str) -> int:
    """Start name again on its recorded port (the URLs handed out name it); returns the pid.

    Whatever is left of the old server (a hung process, orphaned workers holding Postgres's
    shared memory) is stopped first.
    """
    state = _load(cfg)
    rec = state[name]
    pid, port = int(rec["pid"]), int(rec["port"])
    if name == "postgres":
        found = postgres.postmaster(cfg.pg_data_dir)
        if found is not None:
            process.stop(found.pid, first=signal.SIGINT, grace=5.0)
        process.kill_group(pid)
        new_pid = _pg(cfg, port).start().pid
    else:
        server = _s3(cfg, port)
        if server.is_ours(pid):
            process.stop(pid, grace=s3.STOP_GRACE.get(server.kind, 2.0))
        process.kill_group(pid)
        new_pid = server.start().pid
    state = _load(cfg)
    state[name] = {**rec, "pid": new_pid}
    _save(cfg, state)
    return new_pid


# -- status and stop ---------------------------------------------------------------------------
def status(cfg: BackingConfig) -> list[ServiceStatus]:
    """One line per service: external, running (with pid) or stopped. URLs carry no secrets."""
    state = _load(cfg)
    out: list[ServiceStatus] = []
    if cfg.database_url:
        out.append(ServiceStatus("postgres", "external", "external", redact(cfg.database_url)))
    else:
        out.append(_recorded(cfg, state, "postgres", PG_KIND, "postgres.log"))
    if cfg.s3_endpoint_url:
        out.append(ServiceStatus("s3", "external", "external", cfg.s3_endpoint_url))
    else:
        out.append(_recorded(cfg, state, "s3", "s3", "s3.log"))
    return out


def _recorded(
    cfg: BackingConfig, state: Mapping[str, Mapping[str, Any]], name: str, kind: str, log: str
) -> ServiceStatus:
    rec = state.get(name)
    if not rec and name == "postgres" and (found := postgres.postmaster(cfg.pg_data_dir)):
        # Running on our data directory though never recorded (a start cut short): show it.
        rec = {"pid": found.pid, "port": found.port, "kind": kind}
    if not rec:
        return ServiceStatus(name, kind, "stopped", "")
    port = int(rec["port"])
    url = (
        postgres.url(port, postgres.APP_DATABASE)
        if name == "postgres"
        else (f"http://127.0.0.1:{port}")
    )
    running = process.is_running(int(rec["pid"]))
    return ServiceStatus(
        name,
        str(rec.get("kind", kind)),
        "running" if running else "stopped",
        url,
        int(rec["pid"]) if running else None,
        str(cfg.logs / log),
    )


def down(cfg: BackingConfig, only: tuple[str, ...] | None = None) -> list[str]:
    """Stop the embedded services knfn recorded (all, or only the named); returns the stopped.

    A postmaster still running on our data directory is stopped even when it was never
    recorded (a start cut short), so nothing of ours is left behind unseen.
    """
    state = _load(cfg)
    stopped: list[str] = []
    for name in ("s3", "postgres"):
        if only is not None and name not in only:
            continue
        rec = state.get(name)
        if name == "postgres" and not cfg.database_url:
            found = postgres.postmaster(cfg.pg_data_dir)
            if found is not None and (rec is None or int(rec["pid"]) != found.pid):
                process.stop(found.pid, first=signal.SIGINT, grace=15.0)
                if rec is None:
                    stopped.append(name)
        if rec is None:
            continue
        pid = int(rec["pid"])
        if name == "postgres":
            # SIGINT is Postgres's "fast" shutdown: abort sessions, checkpoint, exit.
            process.stop(pid, first=signal.SIGINT, grace=15.0)
        else:
            process.stop(pid, grace=s3.STOP_GRACE.get(str(rec.get("kind")), 2.0))
        del state[name]
        stopped.append(name)
    _save(cfg, state)
    return stopped
