"""Backing-service settings: read from env once, every problem named."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from knfn.backing import services
from knfn.errors import BackingError, PortInUseError


def test_defaults_when_env_is_empty(tmp_path: Path) -> None:
    """No variables: embedded services on the default ports, nothing external."""
    cfg = services.BackingConfig.from_env(tmp_path, {})
    assert (cfg.pg_port, cfg.s3_port) == (services.DEFAULT_PG_PORT, services.DEFAULT_S3_PORT)
    assert cfg.database_url is None and cfg.s3_endpoint_url is None


def test_every_bad_setting_is_named_at_once(tmp_path: Path) -> None:
    """A bad port and an S3 endpoint without keys are reported together, by name."""
    env = {"KNFN_PG_PORT": "70000", "S3_ENDPOINT_URL": "http://s3.example:9000"}
    with pytest.raises(BackingError) as info:
        services.BackingConfig.from_env(tmp_path, env)
    message = str(info.value)
    assert "KNFN_PG_PORT='70000'" in message
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message


def test_external_services_are_taken_from_env(tmp_path: Path) -> None:
    """DATABASE_URL and S3_ENDPOINT_URL with keys make both services external."""
    env = {
        "DATABASE_URL": "postgresql://app:secret@db.example:5432/app",
        "S3_ENDPOINT_URL": "http://minio.example:9000",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "key",
    }
    cfg = services.BackingConfig.from_env(tmp_path, env)
    rows = {row.name: row for row in services.status(cfg)}
    assert rows["postgres"].state == "external"
    assert rows["postgres"].url == "postgresql://app:***@db.example:5432/app"
    assert rows["s3"].state == "external" and rows["s3"].url == "http://minio.example:9000"


def test_explicit_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A port set with KNFN_PG_PORT that is taken stops start-up, naming the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = services.BackingConfig.from_env(tmp_path, {"KNFN_PG_PORT": str(port)})
        with pytest.raises(PortInUseError, match=f"port {port} is already in use"):
            services.up(cfg)
    assert not (tmp_path / "postgres").exists()


def test_default_port_in_use_picks_another_and_reports_it(tmp_path: Path) -> None:
    """A busy default port is replaced by a free one, and the choice is reported."""
    notes: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = services._port(port, False, "postgres (KNFN_PG_PORT)", notes.append)
    assert chosen != port
    assert notes == [f"postgres (KNFN_PG_PORT): port {port} is in use, using {chosen}"]
