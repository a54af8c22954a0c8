"""knfn dev's settings at the CLI edge: parsed once, an invalid value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from knfn.cli import main


@pytest.mark.parametrize(
    ("variable", "value", "option", "why"),
    [
        ("KNFN_AUTOSCALER_TICK", "0s", "--autoscaler-tick", "at least 0.001s"),
        ("KNFN_AUTOSCALER_STABLE_WINDOW", "2.5s", "--autoscaler-stable-window", "whole seconds"),
        ("KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE", "soon", "--autoscaler-scale-to-zero-grace", ""),
        ("KNFN_MEMORY_RESERVE", "lots", "--memory-reserve", "not a size"),
        ("KNFN_MAX_REPLICAS", "0", "--max-replicas", "range"),
        ("KNFN_MAX_REPLICAS_PER_REVISION", "four", "--max-replicas-per-revision", "integer"),
    ],
)
def test_invalid_setting_names_its_variable(
    tmp_path: Path, variable: str, value: str, option: str, why: str
) -> None:
    """A bad value in the environment stops `knfn dev` before it starts anything (exit 2),
    naming the option, the variable and the value."""
    result = CliRunner().invoke(
        main, ["--project-dir", str(tmp_path), "dev"], env={variable: value}
    )
    assert result.exit_code == 2, result.output
    assert f"'{option}' (env var: '{variable}')" in result.output
    assert value in result.output and why in result.output
    assert not (tmp_path / ".knfn").exists()
