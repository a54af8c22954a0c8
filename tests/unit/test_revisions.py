"""The revision digest: what makes a new revision (code the image holds, the template) and what
does not (what the image build leaves out, key order, where the folder is, file times)."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from knfn.serving.revision import default_name, digest, source_files

TEMPLATE: dict[str, Any] = {
    "metadata": {"annotations": {"autoscaling.knative.dev/target": "10"}},
    "spec": {
        "containerConcurrency": 0,
        "timeoutSeconds": 300,
        "containers": [
            {
                "image": "knfn/hello:dev",
                "env": [{"name": "GREETING", "value": "hi"}, {"name": "LEVEL", "value": "info"}],
            }
        ],
    },
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A function folder as the repository has them: code, requirements, README, tests."""
    root = tmp_path / "hello"
    (root / "lib").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "main.py").write_text("def hello(request):\n    return 'hi'\n")
    (root / "lib" / "util.py").write_text("X = 1\n")
    (root / "requirements.txt").write_text("functions-framework==3.8.2\n")
    (root / "README.md").write_text("# hello\n")
    (root / "tests" / "test_main.py").write_text("def test(): pass\n")
    return root


def edited(**changes: Any) -> dict[str, Any]:
    """TEMPLATE with spec and container fields replaced."""
    template = copy.deepcopy(TEMPLATE)
    container = template["spec"]["containers"][0]
    for key, value in changes.items():
        (container if key in container else template["spec"])[key] = value
    return template


def test_the_same_tree_and_template_give_the_same_digest(tree: Path, tmp_path: Path) -> None:
    """Twice the same inputs, a copy elsewhere, and touched files: one digest."""
    first = digest(tree, TEMPLATE)
    assert digest(tree, copy.deepcopy(TEMPLATE)) == first
    elsewhere = shutil.copytree(tree, tmp_path / "moved" / "hello")
    assert digest(elsewhere, TEMPLATE) == first
    os.utime(tree / "main.py", (1, 1))
    assert digest(tree, TEMPLATE) == first
    assert len(first) == 64 and int(first, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: (t / "main.py").write_text("def hello(r):\n    return 'yo'\n"),
                     id="file content"),
        pytest.param(lambda t: (t / "lib" / "util.py").write_text("X = 2\n"), id="nested file"),
        pytest.param(lambda t: (t / "lib" / "util.py").rename(t / "lib" / "helpers.py"),
                     id="file name"),
        pytest.param(lambda t: (t / "lib" / "util.py").rename(t / "util.py"), id="file moved"),
        pytest.param(lambda t: (t / "extra.py").write_text(""), id="new empty file"),
        pytest.param(lambda t: (t / "README.md").unlink(), id="file removed"),
        pytest.param(lambda t: (t / "requirements.txt").write_text("functions-framework==3.9\n"),
                     id="requirements"),
    ],
)  # fmt: skip
def test_a_change_the_image_holds_changes_the_digest(tree: Path, change: Any) -> None:
    """Any change to a file the image copies makes a new revision."""
    before = digest(tree, TEMPLATE)
    change(tree)
    assert digest(tree, TEMPLATE) != before


def test_moving_bytes_between_name_and_content_changes_the_digest(tmp_path: Path) -> None:
    """Path and content are hashed apart: 'ab' holding 'c' is not 'a' holding 'bc'."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "ab").write_text("c")
    (two / "a").write_text("bc")
    assert digest(one, {}) != digest(two, {})


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(edited(containerConcurrency=1), id="containerConcurrency"),
        pytest.param(edited(timeoutSeconds=30), id="timeoutSeconds"),
        pytest.param(edited(env=[{"name": "GREETING", "value": "hello"},
                                 {"name": "LEVEL", "value": "info"}]), id="env value"),
        pytest.param(edited(env=[{"name": "GREETING", "value": "hi"}]), id="env removed"),
        pytest.param(edited(image="knfn/hello:v2"), id="image"),
        pytest.param({**TEMPLATE, "metadata": {"annotations": {
            "autoscaling.knative.dev/target": "20"}}}, id="annotation value"),
        pytest.param({**TEMPLATE, "metadata": {"annotations": {
            "autoscaling.knative.dev/target": "10", "knfn.dev/replica-start": "spawn"}}},
            id="annotation added"),
        pytest.param({**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "name": "hello-blue"}},
                     id="revision name"),
    ],
)  # fmt: skip
def test_a_change_to_the_template_changes_the_digest(tree: Path, template: Any) -> None:
    """Any change to spec.template makes a new revision, as in Knative."""
    assert template != TEMPLATE
    assert digest(tree, template) != digest(tree, TEMPLATE)


def test_key_order_does_not_matter_but_env_order_does(tree: Path) -> None:
    """Mappings are canonical (YAML key order is not a change); the env list keeps its order,
    which Kubernetes gives meaning to ($(VAR) refers to earlier entries)."""
    reordered = {
        "spec": {
            "containers": [
                {
                    "env": [
                        {"value": "hi", "name": "GREETING"},
                        {"value": "info", "name": "LEVEL"},
                    ],
                    "image": "knfn/hello:dev",
                }
            ],
            "timeoutSeconds": 300,
            "containerConcurrency": 0,
        },
        "metadata": {"annotations": {"autoscaling.knative.dev/target": "10"}},
    }
    assert list(reordered) != list(TEMPLATE)
    assert digest(tree, reordered) == digest(tree, TEMPLATE)
    env = TEMPLATE["spec"]["containers"][0]["env"]
    assert digest(tree, edited(env=env[::-1])) != digest(tree, TEMPLATE)


@pytest.mark.parametrize(
    "clutter",
    [
        "__pycache__/main.cpython-311.pyc",
        "lib/__pycache__/util.cpython-311.pyc",
        "main.pyc",
        "lib/util.pyo",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/main.meta.json",
        ".ruff_cache/content",
        "hello.egg-info/PKG-INFO",
        "tests/test_other.py",
        "tests/data/sample.json",
        "test_main.py",
        "lib/test_util.py",
        "conftest.py",
        "lib/conftest.py",
    ],
)
def test_what_the_image_build_leaves_out_does_not_change_the_digest(
    tree: Path, clutter: str
) -> None:
    """Caches, bytecode, egg-info and tests (as .dockerignore drops them) are not the revision."""
    before = digest(tree, TEMPLATE)
    path = tree / clutter
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("anything")
    assert digest(tree, TEMPLATE) == before
    assert path not in set(source_files(tree))
    (tree / "tests" / "test_main.py").write_text("def test(): assert False\n")
    assert digest(tree, TEMPLATE) == before


@pytest.mark.parametrize("clutter", ["main_test.py", "lib/util_test.py"])
def test_test_modules_named_the_other_way_do_not_change_the_digest(
    tree: Path, clutter: str
) -> None:
    """*_test.py, which .dockerignore leaves out too, is not part of the revision."""
    before = digest(tree, TEMPLATE)
    (tree / clutter).write_text("def test(): pass\n")
    assert digest(tree, TEMPLATE) == before


@pytest.mark.parametrize(
    "shipped",
    ["lib/tests/fixtures.py", "lib/tests/__init__.py", "test_data.json", "lib/test_cases.csv"],
)
def test_files_the_image_holds_are_part_of_the_revision(tree: Path, shipped: str) -> None:
    """A package's own tests/ below the top, or test_* data that is not Python, is copied into
    the image (.dockerignore drops only <function>/tests/ and test_*.py): it is in the snapshot
    and a change to it is a new revision."""
    path = tree / shipped
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("one")
    before = digest(tree, TEMPLATE)
    assert path in set(source_files(tree))
    path.write_text("two")
    assert digest(tree, TEMPLATE) != before


def test_source_files_are_in_a_stable_order(tree: Path) -> None:
    """The files the digest and the snapshot take, sorted, tests left out."""
    names = [p.relative_to(tree).as_posix() for p in source_files(tree)]
    assert names == ["README.md", "lib/util.py", "main.py", "requirements.txt"]


def test_default_revision_names_are_knatives() -> None:
    """<service>-00001, five digits, as Knative generates them."""
    assert default_name("hello", 1) == "hello-00001"
    assert default_name("hello", 123) == "hello-00123"
