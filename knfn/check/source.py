"""A function as `knfn check` reads it: its Service, its parsed source files, its manifests.

The files looked at are the ones its image holds (knfn/serving/revision.py ``source_files``:
no tests, no caches), so a check judges what would run. Everything here is data; the checks
are pure functions over it, and unit tests build it from strings (:meth:`FunctionSource.of`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knfn.manifests import Service
from knfn.serving.revision import source_files


@dataclass(frozen=True)
class Module:
    """One Python file of the function, parsed."""

    path: str  # relative to the function's folder
    tree: ast.Module

    def at(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', '?')}"


@dataclass(frozen=True)
class FunctionSource:
    """The files of functions/<name> that its image holds."""

    folder: Path
    modules: tuple[Module, ...]
    requirements: str | None  # the text of requirements.txt; None: there is none
    unreadable: tuple[str, ...] = ()  # files that are not valid Python, with the reason
    files: tuple[str, ...] = ()  # every file, relative

    @classmethod
    def read(cls, folder: Path) -> FunctionSource:
        texts = {}
        files = []
        for path in source_files(folder):
            rel = str(path.relative_to(folder))
            files.append(rel)
            if path.suffix == ".py":
                texts[rel] = path.read_text(encoding="utf-8", errors="replace")
        req = folder / "requirements.txt"
        return cls.of(folder, texts, req.read_text() if req.is_file() else None, files)

    @classmethod
    def of(
        cls,
        folder: Path,
        texts: Mapping[str, str],
        requirements: str | None,
        files: list[str] | None = None,
    ) -> FunctionSource:
        modules, unreadable = [], []
        for rel, text in sorted(texts.items()):
            try:
                modules.append(Module(rel, ast.parse(text, filename=rel)))
            except SyntaxError as exc:
                unreadable.append(f"{rel}:{exc.lineno}: {exc.msg}")
        listed = tuple(files if files is not None else [*texts, "requirements.txt"])
        return cls(folder, tuple(modules), requirements, tuple(unreadable), listed)

    def local_names(self) -> frozenset[str]:
        """Top-level module and package names the folder itself provides."""
        return frozenset(Path(f).parts[0].removesuffix(".py") for f in self.files)

    def nodes(self) -> Iterator[tuple[Module, ast.AST]]:
        for module in self.modules:
            for node in ast.walk(module.tree):
                yield module, node


@dataclass(frozen=True)
class Subject:
    """Everything known about one function before it runs."""

    service: Service
    source: FunctionSource
    # Secrets as the repository holds them: (namespace, name) -> key -> value, with the file.
    secrets: Mapping[tuple[str, str], tuple[Path, Mapping[str, str]]] = field(default_factory=dict)
    jobs: tuple[str, ...] = ()  # the Jobs in the manifests (admin processes)

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def container(self) -> Mapping[str, Any]:
        containers = (self.service.template.get("spec") or {}).get("containers") or [{}]
        first = containers[0]
        return first if isinstance(first, Mapping) else {}

    @property
    def manifest(self) -> str:
        return self.service.source.name


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain (calls in it are shown as ``()``); '' otherwise."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        else:
            return ""


def call_name(call: ast.Call, aliases: Mapping[str, str]) -> str:
    """The dotted name a call is to, with import aliases resolved (``from os import getenv``
    makes ``getenv(...)`` read ``os.getenv``)."""
    name = dotted(call.func)
    head, _, rest = name.partition(".")
    if head in aliases:
        return aliases[head] + ("." + rest if rest else "")
    return name


def aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, for every import in the module."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                out[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return out


def calls(source: FunctionSource) -> Iterator[tuple[Module, ast.Call, str]]:
    """Every call in the function's code with the dotted name it resolves to."""
    for module in source.modules:
        names = aliases(module.tree)
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call):
                yield module, node, call_name(node, names)


def strings(source: FunctionSource) -> Iterator[tuple[Module, ast.Constant]]:
    """Every string literal in code, docstrings left out (they describe, they do not run)."""
    for module in source.modules:
        docs = {id(d) for d in _docstrings(module.tree)}
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
            ):
                yield module, node


def _docstrings(tree: ast.Module) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                yield body[0].value


def imports(source: FunctionSource) -> Iterator[tuple[Module, ast.AST, str]]:
    """Every absolute import, as the top-level name it imports."""
    for module, node in source.nodes():
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield module, node, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield module, node, node.module.split(".")[0]


def constant_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def short(text: str, limit: int = 40) -> str:
    """A literal as evidence: quoted, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
