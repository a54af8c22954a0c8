"""External backing services (factor 4): knfn starts nothing and uses the URLs it is given."""

from __future__ import annotations

from pathlib import Path

from knfn.backing import services


def test_external_services_start_nothing(tmp_path: Path, backing: services.BackingEnv) -> None:
    """With DATABASE_URL and S3_ENDPOINT_URL set, up() starts no process and returns them."""
    env = backing.function_env()
    cfg = services.BackingConfig.from_env(tmp_path / ".knfn", env)
    got = services.up(cfg)
    assert got.started == ()
    assert got.database_url == backing.database_url
    assert got.s3_endpoint_url == backing.s3_endpoint_url
    assert not (tmp_path / ".knfn" / "services.json").exists()
