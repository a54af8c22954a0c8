"""Factor 2, dependencies: every import declared in requirements.txt, every requirement pinned.

Requirements are parsed with ``packaging`` (PEP 508); an import is mapped to the distribution
that provides it in the environment knfn runs in (``importlib.metadata``), the same one the
functions' tests run in. The shared kit (functions/kit) is not listed: the image build installs
it next to the pins (functions/Dockerfile).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import cache
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from knfn.check.model import Finding
from knfn.check.source import FunctionSource, Subject, imports

SHARED = frozenset({"kit"})  # functions/kit, installed by the image build
FIX_PIN = "pin it with == in requirements.txt (pip freeze shows the version in use)"


@cache
def installed() -> Mapping[str, tuple[str, ...]]:
    """Import name -> the distributions that provide it, here."""
    return {k: tuple(v) for k, v in metadata.packages_distributions().items()}


def parse(text: str) -> tuple[dict[str, str], set[str], list[Finding]]:
    """Pinned requirements (canonical name -> line), every name declared (pinned or not), and
    a finding per line that is not a pin."""
    pinned: dict[str, str] = {}
    declared: set[str] = set()
    found: list[Finding] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"requirements.txt:{number}"
        if line.startswith("-"):
            found.append(
                Finding(
                    "warn",
                    f"{where} {line!r} is an option, not a requirement: "
                    "cannot check what it installs",
                    "list pinned requirements only",
                )
            )
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            found.append(
                Finding(
                    "fail", f"{where} {line!r} is not a requirement ({exc})", "write name==version"
                )
            )
            continue
        declared.add(canonicalize_name(req.name))
        specs = list(req.specifier)
        exact = (
            len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version
        )
        if req.url or not exact:
            found.append(Finding("fail", f"{where} {line!r} is not pinned to one version", FIX_PIN))
            continue
        pinned[canonicalize_name(req.name)] = line
    return pinned, declared, found


def dependencies(
    subject: Subject, provided: Mapping[str, tuple[str, ...]] | None = None
) -> list[Finding]:
    src = subject.source
    if src.requirements is None:
        return [
            Finding(
                "fail",
                f"functions/{subject.name} has no requirements.txt",
                "list every runtime dependency there, pinned with ==",
            )
        ]
    _, declared, found = parse(src.requirements)
    found += undeclared(src, declared, installed() if provided is None else provided)
    return found


def undeclared(
    src: FunctionSource, declared: set[str], provided: Mapping[str, tuple[str, ...]]
) -> list[Finding]:
    found: list[Finding] = []
    local, seen = src.local_names(), set()
    for module, node, name in imports(src):
        if name in seen or name in local or name in SHARED or name == "__future__":
            continue
        seen.add(name)
        if name in sys.stdlib_module_names:
            continue
        dists = provided.get(name, ())
        if not dists:
            found.append(
                Finding(
                    "warn",
                    f"{module.at(node)} imports {name}, which is not "
                    "installed here: cannot tell which requirement provides it",
                    f"install the requirements (make setup), or drop {name}",
                )
            )
        elif not any(canonicalize_name(d) in declared for d in dists):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} imports {name} ({dists[0]}), which "
                    "requirements.txt does not declare",
                    f"add {dists[0]}==<version> to requirements.txt",
                )
            )
    return found


def dependencies_passed(subject: Subject) -> str:
    pinned, _, _ = parse(subject.source.requirements or "")
    return (
        f"requirements.txt pins all {len(pinned)} requirements with ==, and declares every "
        "library the code imports"
    )
