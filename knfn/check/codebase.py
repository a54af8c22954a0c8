"""Factors 1 (codebase) and 5 (build, release, run), read from the source and the manifest.

One codebase: the Service runs functions/<name> and nothing beyond it (no knfn, no code pulled
in through sys.path). Build, release, run: the image is the build, image plus the manifest's
config is the release (an immutable Revision); a function that installs packages or reloads
code while it runs blurs the three.
"""

from __future__ import annotations

import ast
from pathlib import Path

from knfn.check.model import Finding
from knfn.check.source import Subject, calls, imports

RUNTIME_ONLY = frozenset({"knfn"})  # the local runtime: never part of a function's image
INSTALLERS = ("pip", "pip3", "apt-get", "apt", "apk", "yum", "dnf", "conda", "poetry", "uv")


def in_repository(folder: Path) -> bool:
    return any((parent / ".git").exists() for parent in (folder, *folder.parents))


def codebase(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    src = subject.source
    if "main.py" not in src.files:
        found.append(
            Finding(
                "fail",
                f"no main.py in functions/{subject.name} for Service {subject.name}",
                f"put the function's code in functions/{subject.name}/main.py",
            )
        )
    for module, node, name in imports(src):
        if name in RUNTIME_ONLY:
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} imports {name}, the local runtime, which no image holds",
                    "import only the kit and pinned libraries; leave the platform to the platform",
                )
            )
    for module, call, name in calls(src):
        if name in ("sys.path.insert", "sys.path.append", "site.addsitedir"):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} {name}(...) reaches for code outside the function's folder",
                    "move shared code into functions/kit, or into this folder",
                )
            )
    if src.unreadable:
        found.append(Finding("fail", f"not valid Python: {src.unreadable[0]}", "fix the syntax"))
    if not in_repository(src.folder):
        found.append(
            Finding(
                "warn",
                f"{src.folder} is not in a git repository: cannot tell it is one tracked codebase",
                "keep the function in the project's repository",
            )
        )
    return found


def codebase_passed(subject: Subject) -> str:
    return (
        f"Service {subject.name} runs functions/{subject.name} of this repository; "
        "it imports nothing from outside it but libraries and the kit"
    )


def build_release_run(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    image = str(subject.container.get("image") or "")
    if not image:
        found.append(
            Finding(
                "fail",
                f"{subject.manifest}: the container has no image",
                f"set image: knfn/{subject.name}:<tag>, built by functions/Dockerfile",
            )
        )
    else:
        repository = image.split("@")[0].rsplit(":", 1)[0] if "/" in image else image
        if repository.rsplit("/", 1)[-1] != subject.name:
            found.append(
                Finding(
                    "warn",
                    f"{subject.manifest}: image {image} is not named after "
                    f"functions/{subject.name}: cannot tell it is built from it",
                    f"name the image knfn/{subject.name}",
                )
            )
    for module, call, name in calls(subject.source):
        words = [a.value for a in ast_args(call) if isinstance(a.value, str)]
        runs_installer = name.startswith(("subprocess.", "os.system", "os.popen")) and any(
            w.split()[0].rsplit("/", 1)[-1] in INSTALLERS for w in words if w.strip()
        )
        if runs_installer or name in ("importlib.reload", "pip.main", "pip._internal.main"):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} {name}(...) changes the build while it runs",
                    "declare dependencies in requirements.txt; "
                    "a change is a new image and a new revision",
                )
            )
    return found


def ast_args(call: ast.Call) -> list[ast.Constant]:
    """The literal arguments of a call, lists flattened (``["pip", "install"]``)."""
    out: list[ast.Constant] = []
    for arg in call.args:
        if isinstance(arg, ast.List | ast.Tuple):
            out.extend(e for e in arg.elts if isinstance(e, ast.Constant))
        elif isinstance(arg, ast.Constant):
            out.append(arg)
    return out


def build_release_run_passed(subject: Subject) -> str:
    image = subject.container.get("image")
    return (
        f"image {image} is the build of functions/{subject.name}; with the manifest's config "
        "it is an immutable revision; nothing is installed or reloaded at run time"
    )
