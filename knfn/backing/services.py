"""Bring the backing services up, find them again, report and stop them.

Each service is either *external* (the user set ``DATABASE_URL`` / ``S3_ENDPOINT_URL``: knfn
starts nothing, factor 4) or *embedded* (started here, detached, recorded in
``.knfn/services.json`` so that ``knfn dev``, ``knfn services status`` and ``down`` find it).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knfn import ports
from knfn.backing import postgres, process, s3
from knfn.errors import BackingError, PortInUseError

DEFAULT_PG_PORT = 15432
DEFAULT_S3_PORT = 19000

Report = Callable[[str], None]


@dataclass(frozen=True)
class BackingConfig:
    """Where state lives and which services are external; built once from env at the edge."""

    state_dir: Path
    pg_port: int = DEFAULT_PG_PORT
    s3_port: int = DEFAULT_S3_PORT
    pg_port_explicit: bool = False
    s3_port_explicit: bool = False
    database_url: str | None = None
    knfn_database_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = s3.REGION

    @classmethod
    def from_env(cls, state_dir: Path, env: Mapping[str, str]) -> BackingConfig:
        problems: list[str] = []

        def port(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None:
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                problems.append(f"{name}={raw!r} is not a port number (1..65535)")
                return default
            return int(raw)

        cfg = cls(
            state_dir=state_dir,
            pg_port=port("KNFN_PG_PORT", DEFAULT_PG_PORT),
            s3_port=port("KNFN_S3_PORT", DEFAULT_S3_PORT),
            pg_port_explicit="KNFN_PG_PORT" in env,
            s3_port_explicit="KNFN_S3_PORT" in env,
            database_url=env.get("DATABASE_URL") or None,
            knfn_database_url=env.get("KNFN_DATABASE_URL") or None,
            s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            s3_access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            s3_secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            s3_region=env.get("AWS_REGION") or s3.REGION,
        )
        if cfg.s3_endpoint_url and not (cfg.s3_access_key and cfg.s3_secret_key):
            problems.append(
                "S3_ENDPOINT_URL is set, so AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "must be set too"
            )
        if problems:
            raise BackingError("invalid backing-service settings:\n  " + "\n  ".join(problems))
        return cfg

    @property
    def state_file(self) -> Path:
        return self.state_dir / "services.json"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"


@dataclass(frozen=True)
class BackingEnv:
    """How to reach the running services: what the functions' Secret is filled with."""

    database_url: str
    knfn_database_url: str
    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    started: tuple[str, ...] = field(default=())

    def function_env(self) -> dict[str, str]:
        """The variables a function reads to reach Postgres and S3."""
        return {
            "DATABASE_URL": self.database_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_REGION": self.s3_region,
        }


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
        data_dir=cfg.state_dir / "postgres" / "data",
        log_path=cfg.logs / "postgres.log",
        port=port,
    )


def _s3(cfg: BackingConfig, port: int) -> s3.LocalS3:
    return s3.LocalS3(
        data_dir=cfg.state_dir / "s3",
        log_path=cfg.logs / "s3.log",
        port=port,
        credentials=s3.load_credentials(cfg.state_dir / "s3" / "credentials.json"),
    )


def up(cfg: BackingConfig, report: Report = lambda _: None) -> BackingEnv:
    """Make sure both services run (or are external) and say how to reach them."""
    state = _load(cfg)
    started: list[str] = []
    pg_port = s3_port = 0

    # 1. Postgres: external by URL, else the recorded embedded server if it still answers.
    if not cfg.database_url:
        rec = state.get("postgres")
        if rec and process.is_running(rec["pid"]) and _pg(cfg, rec["port"]).answers():
            pg_port = int(rec["port"])
        else:
            pg_port = _port(cfg.pg_port, cfg.pg_port_explicit, "postgres (KNFN_PG_PORT)", report)
            proc = _pg(cfg, pg_port).start()
            state["postgres"] = {"pid": proc.pid, "port": pg_port, "kind": "embedded-postgres"}
            _save(cfg, state)
            started.append("postgres")

    # 2. S3: external by endpoint, else the recorded local server if it still answers.
    if not cfg.s3_endpoint_url:
        rec = state.get("s3")
        if rec and process.is_running(rec["pid"]) and _answers(_s3(cfg, int(rec["port"]))):
            s3_port = int(rec["port"])
        else:
            s3_port = _port(cfg.s3_port, cfg.s3_port_explicit, "s3 (KNFN_S3_PORT)", report)
            server = _s3(cfg, s3_port)
            proc = server.start()
            state["s3"] = {"pid": proc.pid, "port": s3_port, "kind": server.kind}
            _save(cfg, state)
            started.append("s3")

    return _reach(cfg, pg_port, s3_port, tuple(started))


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


def _answers(server: s3.LocalS3) -> bool:
    return s3.answers(server.endpoint, server.credentials)


def _reach(
    cfg: BackingConfig, pg_port: int, s3_port: int, started: tuple[str, ...] = ()
) -> BackingEnv:
    """The URLs and keys of the services: the external ones, else the embedded ones' ports."""
    if cfg.database_url:
        app_url = cfg.database_url
        knfn_url = cfg.knfn_database_url or cfg.database_url
    else:
        app_url = postgres.url(pg_port, postgres.APP_DATABASE)
        knfn_url = cfg.knfn_database_url or postgres.url(pg_port, postgres.KNFN_DATABASE)
    if cfg.s3_endpoint_url:
        endpoint = cfg.s3_endpoint_url
        creds = s3.Credentials(cfg.s3_access_key or "", cfg.s3_secret_key or "")
    else:
        server = _s3(cfg, s3_port)
        endpoint, creds = server.endpoint, server.credentials
    return BackingEnv(
        database_url=app_url,
        knfn_database_url=knfn_url,
        s3_endpoint_url=endpoint,
        s3_access_key=creds.access_key,
        s3_secret_key=creds.secret_key,
        s3_region=cfg.s3_region,
        started=started,
    )


def status(cfg: BackingConfig) -> list[ServiceStatus]:
    """One line per service: external, running (with pid) or stopped."""
    state = _load(cfg)
    out: list[ServiceStatus] = []
    if cfg.database_url:
        out.append(ServiceStatus("postgres", "external", "external", _redact(cfg.database_url)))
    else:
        out.append(_recorded(cfg, state, "postgres", "embedded-postgres", "postgres.log"))
    if cfg.s3_endpoint_url:
        out.append(ServiceStatus("s3", "external", "external", cfg.s3_endpoint_url))
    else:
        out.append(_recorded(cfg, state, "s3", "s3", "s3.log"))
    return out


def _recorded(
    cfg: BackingConfig, state: Mapping[str, Mapping[str, Any]], name: str, kind: str, log: str
) -> ServiceStatus:
    rec = state.get(name)
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
    """Stop the embedded services knfn recorded (all, or only the named); returns the stopped."""
    state = _load(cfg)
    stopped: list[str] = []
    for name in ("s3", "postgres"):
        rec = state.get(name)
        if rec is None or (only is not None and name not in only):
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


def _redact(url: str) -> str:
    """A URL with its password replaced, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
