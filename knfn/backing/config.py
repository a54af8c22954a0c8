"""The backing services' settings, read once from the environment at the edge, and how to reach
the running services (what the functions' Secret is filled with), printable with secrets hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from knfn.backing import s3
from knfn.errors import BackingError

DEFAULT_PG_PORT = 15432
DEFAULT_S3_PORT = 19000

Report = Callable[[str], None]
# Who started a server (recorded with it): `knfn dev`, or `knfn services up`.
DEV, SERVICES = "dev", "services"


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
    # The environment knfn's own S3 server starts with (from_env: the one given); kept out of
    # repr since it may hold secrets.
    server_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

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
            server_env=dict(env),
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

    @property
    def pg_data_dir(self) -> Path:
        return self.state_dir / "postgres" / "data"


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


def redact(url: str) -> str:
    """A URL with its password replaced, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


SECRET_KEYS = ("AWS_SECRET_ACCESS_KEY",)


def redacted_env(env: Mapping[str, str]) -> dict[str, str]:
    """A function env fit for printing: passwords in URLs and secret keys replaced by ***."""
    return {
        key: "***" if key in SECRET_KEYS else redact(value) if "://" in value else value
        for key, value in env.items()
    }
