"""functions/Dockerfile passes hadolint and keeps the image contract the manifests rely on."""

from __future__ import annotations

from pathlib import Path

import manifest_checks as mc
import manifest_pipeline as pipeline
import pytest


def test_hadolint_passes(hadolint: Path, repo: Path) -> None:
    """hadolint finds nothing, with no rule ignored."""
    assert mc.check_hadolint(hadolint, repo / "functions/Dockerfile") == []


def test_hadolint_check_reports_findings(hadolint: Path, tmp_path: Path) -> None:
    """An unpinned base image and apt-get without pins are reported by rule."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\n")
    problems = mc.check_hadolint(hadolint, dockerfile)
    assert any("DL3006" in p for p in problems)  # untagged image
    assert any("DL3008" in p for p in problems)  # apt packages not pinned


def test_dockerfile_contract(repo: Path) -> None:
    """One Dockerfile, ARG FUNCTION, multi-stage, pinned python:3.11.x-slim, numeric user,
    /app/function, /app/migrations, CMD functions-framework, unbuffered output."""
    assert mc.check_dockerfile_contract((repo / "functions/Dockerfile").read_text()) == []


def test_dockerignore_keeps_build_inputs(repo: Path) -> None:
    """The build context is the repository root: .dockerignore lets functions/ and
    postgres/migrations/ in and keeps the venv out."""
    lines = (repo / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    assert "!functions/" in lines
    assert "!postgres/migrations/" in lines


GOOD = """\
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE} AS builder
ARG FUNCTION
RUN pip wheel --wheel-dir /wheels ./kit
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1
COPY postgres/migrations/ /app/migrations/
WORKDIR /app/function
USER 10001:10001
CMD ["functions-framework"]
"""


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("ARG FUNCTION\n", "", "no ARG FUNCTION"),
        ("FROM ${PYTHON_IMAGE} AS builder\n", "", "not multi-stage"),
        ("python:3.11.14-slim-bookworm", "python:3.11-slim", "not a pinned python:3.11.x-slim"),
        ("python:3.11.14-slim-bookworm", "python:3.12.1-slim", "not a pinned python:3.11.x-slim"),
        ("USER 10001:10001", "USER app", "numeric non-root"),
        ("USER 10001:10001", "USER 0", "numeric non-root"),
        ("WORKDIR /app/function", "WORKDIR /srv", "/app/function"),
        ("COPY postgres/migrations/ /app/migrations/\n", "", "/app/migrations"),
        ('CMD ["functions-framework"]', 'CMD ["python", "main.py"]', "CMD"),
        ("ENV PYTHONUNBUFFERED=1\n", "", "PYTHONUNBUFFERED"),
    ],
)
def test_dockerfile_contract_breaks(old: str, new: str, fragment: str) -> None:
    """Each broken part of the contract is reported."""
    assert mc.check_dockerfile_contract(GOOD) == []
    broken = GOOD.replace(old, new)
    assert broken != GOOD
    problems = mc.check_dockerfile_contract(broken)
    assert any(fragment in p for p in problems), problems


def test_every_function_has_its_build_inputs(repo: Path) -> None:
    """Each Service's folder has main.py and a pinned requirements.txt for the image build.
    (Fails until every function folder is complete: the functions are written separately.)"""
    problems = mc.check_function_build_inputs(repo / "functions", pipeline.FUNCTIONS)
    assert problems == []


def test_build_inputs_check_reports_gaps(tmp_path: Path) -> None:
    """A missing requirements.txt and an unpinned package are reported; pins, extras,
    comments, options and local paths pass."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.py").write_text("")
    (tmp_path / "a" / "requirements.txt").write_text(
        "# pinned\nflask==3.1.3\npsycopg[binary]==3.3.9  # db\n-r ../common.txt\n../kit\n"
        "requests>=2\n"
    )
    problems = mc.check_function_build_inputs(tmp_path, ["a", "b"])
    assert len(problems) == 2
    assert any("a/requirements.txt:6: 'requests>=2' is not pinned" in p for p in problems)
    assert any("b/requirements.txt: missing" in p for p in problems)
