"""The local S3 server's environment: what the edge passes plus knfn's own, never os.environ."""

from __future__ import annotations

from pathlib import Path

import pytest

from knfn.backing import s3, services

GIVEN = {"PATH": "/usr/bin:/bin", "HOME": "/home/someone", "MINIO_BROWSER": "off"}


def local_s3(tmp_path: Path, env: dict[str, str]) -> s3.LocalS3:
    return s3.LocalS3(
        data_dir=tmp_path / "s3",
        log_path=tmp_path / "s3.log",
        port=9000,
        credentials=s3.Credentials("key", "secret"),
        env=env,
    )


@pytest.fixture(autouse=True)
def canary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable of this process that must not reach the server unless it is passed."""
    monkeypatch.setenv("KNFN_TEST_CANARY", "leaked")


def test_seaweedfs_gets_the_given_env_and_its_signing_keys(tmp_path: Path) -> None:
    """weed starts with exactly the given variables plus its WEED_* security settings."""
    (tmp_path / "s3").mkdir()
    _, env = local_s3(tmp_path, GIVEN)._seaweedfs()
    assert {k: env[k] for k in GIVEN} == GIVEN
    assert "KNFN_TEST_CANARY" not in env
    assert set(env) - set(GIVEN) == set(s3.seaweedfs_security())


def test_minio_gets_the_given_env_and_its_root_credentials(tmp_path: Path) -> None:
    """minio starts with the given variables plus its root user and password."""
    _, env = local_s3(tmp_path, GIVEN)._minio()
    assert env == {**GIVEN, "MINIO_ROOT_USER": "key", "MINIO_ROOT_PASSWORD": "secret"}


def test_backing_config_passes_the_edge_env_to_the_server(tmp_path: Path) -> None:
    """BackingConfig.from_env keeps the env it was given for the S3 server, out of its repr."""
    env = {**GIVEN, "GITHUB_TOKEN": "t0ken"}
    cfg = services.BackingConfig.from_env(tmp_path, env)
    assert cfg.server_env == env
    assert "t0ken" not in repr(cfg)
    assert services.BackingConfig(state_dir=tmp_path).server_env == {}
