"""knfn's own settings, read once at the CLI edge: flags win over env, env over defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from knfn.backing.config import BackingConfig


@dataclass(frozen=True)
class Settings:
    """Everything a knfn command needs to know about where it runs."""

    project_dir: Path
    state_dir: Path
    backing: BackingConfig

    @property
    def migrations_dir(self) -> Path:
        return self.project_dir / "postgres" / "migrations"

    @property
    def functions_dir(self) -> Path:
        return self.project_dir / "functions"

    @property
    def knative_dir(self) -> Path:
        return self.project_dir / "knative" / "base"

    @classmethod
    def load(cls, project_dir: Path, state_dir: Path | None, env: Mapping[str, str]) -> Settings:
        project = project_dir.resolve()
        state = (state_dir or project / ".knfn").resolve()
        return cls(project, state, BackingConfig.from_env(state, env))
