"""Packaging: knfn installed alone into a fresh venv (no dev requirements, no kit) works.

The install uses only pyproject.toml's dependencies, pinned to the versions requirements.txt
names, so what a plain ``pip install .`` gives is what is checked: the CLI starts, every
third-party import of knfn/ resolves, the package data is there, and test-only packages stay out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with knfn installed from a copy of the sources (the work tree stays clean)."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src / "pyproject.toml")
    shutil.copytree(REPO / "knfn", src / "knfn", ignore=shutil.ignore_patterns("__pycache__"))
    # The pins of requirements.txt as constraints (which take no extras): the versions the dev
    # venv has.
    pins = [
        re.sub(r"\[.*\]", "", line)
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith(("#", "-"))
    ]
    constraints = root / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "-c", str(constraints), str(src)],
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    yield root / "venv"


def run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # Outside the repository, so that nothing is imported from the work tree by accident.
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv,
    )


def test_cli_starts(venv: Path) -> None:
    """knfn --help lists its commands and knfn status --help answers, from a plain install."""
    main = run(venv, "knfn", "--help")
    assert main.returncode == 0, main.stderr
    for command in ("dev", "status", "events", "invoke", "logs", "services", "admin"):
        assert f"  {command} " in main.stdout
    status = run(venv, "knfn", "status", "--help")
    assert status.returncode == 0, status.stderr
    assert "Usage: knfn status" in status.stdout


def test_every_import_of_knfn_is_declared(venv: Path) -> None:
    """Each third-party module knfn imports (at the top or inside a function) is installed, and
    every knfn module imports; the function kit is the project's, not knfn's. Imports under
    ``if TYPE_CHECKING:`` are for the type checker only (e.g. ``_typeshed``) and never run."""
    script = textwrap.dedent(
        """
        import ast, importlib, importlib.util, pathlib, sys
        import knfn
        root = pathlib.Path(knfn.__file__).parent
        missing, modules = set(), []
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root.parent).with_suffix("")
            modules.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
            tree = ast.parse(path.read_text())
            typing_only = {
                id(inner)
                for node in ast.walk(tree)
                if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
                for stmt in node.body
                for inner in ast.walk(stmt)
            }
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("knfn", "kit"):
                        continue
                    if importlib.util.find_spec(top) is None:
                        missing.add(f"{top} (in {rel})")
        for module in modules:
            importlib.import_module(module)
        print("missing:", sorted(missing))
        print("modules:", len(modules))
        """
    )
    result = run(venv, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "missing: []" in result.stdout, result.stdout
    assert int(result.stdout.split("modules:")[1]) > 50


def test_package_data_is_installed(venv: Path) -> None:
    """The dashboard's static files and plotly.min.js (from the plotly wheel) are there."""
    script = (
        "from knfn import dashboard; "
        "assert (dashboard.STATIC / 'index.html').is_file(); "
        "print(len(dashboard.plotly_js()))"
    )
    result = run(venv, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 1_000_000


def test_test_only_packages_stay_out(venv: Path) -> None:
    """croniter and pytest are requirements-dev.txt's, not knfn's."""
    script = (
        "import importlib.util as u; "
        "print([m for m in ('croniter', 'pytest', 'hypothesis') if u.find_spec(m)])"
    )
    result = run(venv, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_admin_step_without_the_kit_says_what_to_install(venv: Path) -> None:
    """The admin steps are the project's kit; without it the error names it, no traceback."""
    script = textwrap.dedent(
        """
        from knfn import admin
        from knfn.backing.services import BackingEnv
        from knfn.errors import KnfnError
        env = BackingEnv("postgresql://x", "postgresql://y", "http://127.0.0.1:1", "a", "s", "r")
        try:
            admin.buckets(env, ["photos"])
        except KnfnError as exc:
            print(exc)
        """
    )
    result = run(venv, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "buckets: the admin steps run the project's function kit" in result.stdout
    assert "pip install ./functions/kit" in result.stdout
