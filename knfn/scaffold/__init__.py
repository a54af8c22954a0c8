"""``knfn new``: a new function, complete like the repository's own, from templated files.

A function is its folder (``functions/<name>/``: main.py on the shared kit, pinned
requirements.txt, README.md, tests/), its Knative Service (``knative/base/service-<name>.yaml``),
for a CloudEvent consumer a Trigger on the default broker, and a line for each in
``knative/base/kustomization.yaml``; its image is also mapped in every overlay that maps the
other functions' images (``knative/overlays/*/kustomization.yaml``, ``images:``).

The templates are plain files in ``knfn/scaffold/templates`` read with importlib.resources and
filled with ``string.Template`` (``$name``; ``$$`` for a literal dollar). ``plan`` is the pure
part: it reads the project, decides every file and edit, and checks the edited kustomizations
parse to exactly what was meant; ``write`` then creates the files and replaces the edited ones
atomically, the base kustomization last, so ``knfn dev --watch`` sees the Service only once
everything it needs is on disk.

The kustomizations are edited as text (PyYAML cannot keep comments and there is no
round-trip YAML library among the dependencies): a list item is inserted next to its siblings
with their indentation, and the result is parsed again to prove nothing else moved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from knfn.errors import KnfnError

TEMPLATES = ("http", "cloudevent")
NAMESPACE = "default"
# A Knative Service name is a DNS-1035 label: knative.dev/pkg apis/metadata_validation.go
# (ValidateObjectMetadata, used by serving's pkg/apis/serving/metadata_validation.go) checks
# it with Kubernetes' NameIsDNS1035Label, which allows at most 63 characters.
MAX_NAME = 63
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ScaffoldError(KnfnError):
    """`knfn new` refused: a bad name or type, a name already taken, a file it cannot edit."""

    exit_code = 2


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a Knative Service name, or None when it can."""
    if not name:
        return "a Service name must not be empty"
    if len(name) > MAX_NAME:
        return f"{name!r} is {len(name)} characters long; a Service name has at most {MAX_NAME}"
    if not _DNS1035.fullmatch(name):
        return (
            f"{name!r} is not a DNS-1035 label: lower-case letters, digits and '-', starting "
            "with a letter and ending with a letter or digit (Knative's rule for Service names)"
        )
    return None


def default_event_type(name: str) -> str:
    """The CloudEvent type a new consumer is subscribed to unless `--type` says otherwise:
    ``dev.knfn.<name>.requested``, in the style of the pipeline's ``dev.knfn.object.stored``."""
    return f"dev.knfn.{name}.requested"


def event_type_problem(event_type: str) -> str | None:
    """Why `event_type` cannot be a Trigger's type filter, or None when it can."""
    if not event_type.strip():
        return "the event type must not be empty (CloudEvents: type is a non-empty string)"
    if _CONTROL.search(event_type) or event_type != event_type.strip():
        return f"the event type {event_type!r} has control characters or surrounding spaces"
    return None


def trigger_name(service: str, event_type: str) -> str:
    """The Trigger's name, after the pipeline's ``<subscriber>-<what>`` (catalog-object-stored):
    the service, then what the type says after the service's own name when it holds it
    (dev.knfn.NAME.requested: NAME-requested), else the type's last two dot-separated parts
    (com.example.order.created: NAME-order-created); cut to 63 characters."""
    parts = [p for p in event_type.lower().split(".") if p]
    after = parts[len(parts) - parts[::-1].index(service) :] if service in parts else parts[-2:]
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(after)).strip("-")
    return f"{service}-{slug}"[:MAX_NAME].rstrip("-") if slug else f"{service}-events"


def python_string(text: str, width: int = 80) -> str:
    """`text` as a Python string literal, in pieces of at most `width` characters of `text`
    on their own lines (implicit concatenation) when it is long: no line of generated code
    has to be longer than the project's limit, whatever the type a user chose."""
    pieces = [text[i : i + width] for i in range(0, len(text), width)] or [""]
    return "\n    ".join(json.dumps(piece) for piece in pieces)


@dataclass(frozen=True)
class Plan:
    """Everything `knfn new` will do, decided before anything is written."""

    name: str
    template: str
    event_type: str | None
    trigger: str | None
    # Paths relative to the project.
    created: Mapping[Path, str] = field(default_factory=dict)
    changed: Mapping[Path, str] = field(default_factory=dict)
    skipped: Sequence[str] = ()


def _template_files(template: str) -> dict[str, str]:
    """The template's files and the shared ones, by file name without ``.tmpl``."""
    root = resources.files(__package__).joinpath("templates")
    found: dict[str, str] = {}
    for folder in ("common", template):
        for entry in root.joinpath(folder).iterdir():
            if entry.name.endswith(".tmpl"):
                found[entry.name.removesuffix(".tmpl")] = entry.read_text(encoding="utf-8")
    return found


def _fill(text: str, values: Mapping[str, str], where: str) -> str:
    try:
        return string.Template(text).substitute(values)
    except (KeyError, ValueError) as exc:  # a broken template is a bug in knfn, say where
        raise ScaffoldError(f"template {where}: bad placeholder: {exc}") from exc


def plan(project: Path, name: str, template: str, event_type: str | None = None) -> Plan:
    """Decide the files for a new function `name` in `project`; refuse with the reason."""
    if template not in TEMPLATES:
        raise ScaffoldError(f"--template {template!r}: choose one of {', '.join(TEMPLATES)}")
    problem = name_problem(name)
    if problem:
        raise ScaffoldError(f"cannot create {name!r}: {problem}")
    if event_type is not None and template != "cloudevent":
        raise ScaffoldError("--type names the event a Trigger filters on: only with cloudevent")
    if template == "cloudevent":
        event_type = default_event_type(name) if event_type is None else event_type
        problem = event_type_problem(event_type)
        if problem:
            raise ScaffoldError(f"--type: {problem}")
    base = Path("knative/base")
    kustomization = project / base / "kustomization.yaml"
    if not kustomization.is_file():
        raise ScaffoldError(f"{kustomization} does not exist: is {project} a knfn project?")
    _refuse_taken(project, name)

    trigger = trigger_name(name, event_type) if event_type is not None else None
    values = {
        "name": name,
        "target": name.replace("-", "_"),
        "prefix": name.replace("-", "_").upper(),
        "event_type": event_type or "",
        "event_type_yaml": json.dumps(event_type or ""),
        "event_type_py": python_string(event_type or ""),
        "trigger": trigger or "",
    }
    files = _template_files(template)
    folder = Path("functions") / name
    created: dict[Path, str] = {}
    layout = {
        "main.py": folder / "main.py",
        "requirements.txt": folder / "requirements.txt",
        "README.md": folder / "README.md",
        "test.py": folder / "tests" / f"test_{values['target']}.py",
        "service.yaml": base / f"service-{name}.yaml",
        "trigger.yaml": base / f"trigger-{trigger}.yaml",
    }
    for source, text in sorted(files.items(), key=lambda item: layout[item[0]]):
        created[layout[source]] = _fill(text, values, f"{template}/{source}")
    for path in created:
        if (project / path).exists():
            raise ScaffoldError(f"cannot create {name!r}: {project / path} already exists")

    changed: dict[Path, str] = {}
    skipped: list[str] = []
    for overlay in sorted((project / "knative" / "overlays").glob("*/kustomization.yaml")):
        relative = overlay.relative_to(project)
        try:
            changed[relative] = add_image(overlay.read_text(), f"knfn/{name}")
        except NoSiblings as exc:
            skipped.append(f"{relative}: {exc}, left as it is")
        except EditError as exc:
            raise ScaffoldError(f"{relative}: {exc}") from exc
    text = kustomization.read_text()
    try:
        text = add_resource(text, f"service-{name}.yaml", "service-")
        if trigger is not None:
            text = add_resource(text, f"trigger-{trigger}.yaml", "trigger-")
    except EditError as exc:
        raise ScaffoldError(f"{kustomization}: {exc}") from exc
    changed[base / "kustomization.yaml"] = text  # last: dicts keep insertion order
    return Plan(name, template, event_type, trigger, created, changed, skipped)


def _refuse_taken(project: Path, name: str) -> None:
    """Refuse a name whose folder exists or that a listed manifest already uses for a Service."""
    folder = project / "functions" / name
    if folder.exists():
        raise ScaffoldError(f"cannot create {name!r}: {folder} already exists")
    base = project / "knative" / "base"
    listed = _resources(base / "kustomization.yaml")
    for entry in listed:
        path = base / entry
        if not path.is_file():
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ScaffoldError(f"{path}: not valid YAML, fix it first: {exc}") from exc
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Service":
                continue
            meta = doc.get("metadata") or {}
            if str(doc.get("apiVersion", "")).startswith("serving.knative.dev/") and (
                meta.get("name") == name
            ):
                raise ScaffoldError(
                    f"cannot create {name!r}: {path} already defines Knative Service {name}"
                )


def _resources(kustomization: Path) -> list[str]:
    try:
        doc = yaml.safe_load(kustomization.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ScaffoldError(f"{kustomization}: not valid YAML, fix it first: {exc}") from exc
    return [str(entry) for entry in doc.get("resources") or []]


def write(project: Path, p: Plan) -> list[Path]:
    """Carry out a plan: new files first, then each edited file replaced atomically (the base
    kustomization last). Returns the paths written, relative to the project. If writing
    fails part-way, the new files are removed again."""
    done: list[Path] = []
    try:
        for path, text in p.created.items():
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8") as out:  # never overwrite
                out.write(text)
            done.append(path)
        _format(project, [path for path in done if path.suffix == ".py"])
        for path, text in p.changed.items():
            _replace(project / path, text)
            done.append(path)
    except OSError as exc:
        for path in reversed(done):
            if path in p.created:
                with contextlib.suppress(OSError):
                    (project / path).unlink()
        with contextlib.suppress(OSError):
            for folder in (
                project / "functions" / p.name / "tests",
                project / "functions" / p.name,
            ):
                folder.rmdir()
        raise ScaffoldError(f"could not write {exc.filename}: {exc.strerror}") from exc
    return done


def _format(project: Path, paths: list[Path]) -> None:
    """Run ruff's formatter on the new Python files, where ruff is installed (it is a
    development dependency, so it is in every checkout set up with `make setup`): the templates
    are formatted for short names, and a long one can push a line past the project's line
    length. Without ruff the files stay as the templates made them (valid, maybe long)."""
    ruff = Path(sys.executable).parent / "ruff"
    if not paths or not ruff.is_file():
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [str(ruff), "format", "--quiet", *map(str, paths)],
            cwd=project,
            capture_output=True,
            timeout=60,
            check=False,
        )


def _replace(path: Path, text: str) -> None:
    """Write text to path through a temporary file in the same folder and a rename, so a
    reader (knfn dev --watch) sees the old file or the new one, never half of it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ---- text edits of kustomization.yaml ------------------------------------------------------


class EditError(Exception):
    """A kustomization could not be edited safely as text."""


class NoSiblings(EditError):
    """The list has no item to copy the shape of."""


_ITEM = re.compile(r"^(?P<indent>\s*)- (?P<value>.*?)\s*$")


def _block(lines: list[str], key: str) -> tuple[int, int]:
    """(first, end) line indexes of the block under the top-level `key:`; end is past its
    last list line (trailing blank and comment lines are left to what follows)."""
    start = next((i for i, line in enumerate(lines) if line.rstrip() == f"{key}:"), None)
    if start is None:
        raise NoSiblings(f"no block-style top-level {key}: list")
    end = start + 1
    last = start
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#-"):
        if lines[end].strip() and not lines[end].lstrip().startswith("#"):
            last = end
        end += 1
    return start + 1, last + 1


def _items(lines: list[str], first: int, end: int) -> list[int]:
    """Indexes of the list items in lines[first:end] at the first item's indentation (not
    the items of lists nested in them)."""
    found = [(i, m["indent"]) for i in range(first, end) if (m := _ITEM.match(lines[i]))]
    return [i for i, indent in found if indent == found[0][1]] if found else []


def _checked(old: str, new: str, key: str, check: Callable[[list[Any], list[Any]], bool]) -> str:
    """`new`, once it parses, differs from `old` only under `key`, and `check(before, after)`
    holds for that list; else an EditError asking for the edit by hand."""
    try:
        before, after = (yaml.safe_load(text) or {} for text in (old, new))
    except yaml.YAMLError as exc:
        raise EditError(f"the edited file would not parse ({exc}); edit {key}: by hand") from exc
    rest_same = {k: v for k, v in before.items() if k != key} == {
        k: v for k, v in after.items() if k != key
    }
    if not (rest_same and check(before.get(key) or [], after.get(key) or [])):
        raise EditError(f"could not insert into {key}: safely; add the entry by hand")
    return new


def add_resource(text: str, entry: str, sibling_prefix: str) -> str:
    """`text` with `- entry` added to its top-level `resources:` list, after the last item
    starting with `sibling_prefix` (else after the last item), in that item's indentation."""
    lines = text.splitlines(keepends=True)
    first, end = _block(lines, "resources")
    items = [(i, m) for i in _items(lines, first, end) if (m := _ITEM.match(lines[i]))]
    if not items:
        raise EditError("resources: has no block-style list items to add to")
    siblings = [(i, m) for i, m in items if m["value"].startswith(sibling_prefix)]
    at, match = (siblings or items)[-1]
    if not lines[at].endswith("\n"):
        lines[at] += "\n"
    lines.insert(at + 1, f"{match['indent']}- {entry}\n")
    return _checked(
        text,
        "".join(lines),
        "resources",
        lambda b, a: [x for x in a if x != entry] == b and entry in a,
    )


def add_image(text: str, image: str) -> str:
    """`text` with an `images:` entry for `image` added after the last ``knfn/*`` one, shaped
    as that one (same newName prefix, tag or placeholder digest)."""
    lines = text.splitlines(keepends=True)
    first, end = _block(lines, "images")
    starts = _items(lines, first, end)
    if not starts:
        raise NoSiblings("images: has no entries")
    entries = [(s, next((t for t in starts if t > s), end)) for s in starts]
    ours = [(s, e) for s, e in entries if re.match(r"\s*- name: knfn/[-a-z0-9]+\s*$", lines[s])]
    if any(lines[s].split("name:", 1)[1].strip() == image for s, _ in ours):
        raise NoSiblings(f"images: maps {image} already")
    if not ours:
        raise NoSiblings("images: maps no knfn/* image")
    start, stop = ours[-1]
    while stop > start + 1 and (not lines[stop - 1].strip() or lines[stop - 1].lstrip()[0] == "#"):
        stop -= 1  # leave comments and blank lines that lead into the next entry
    sibling = re.search(r"knfn/[-a-z0-9]+", lines[start])
    assert sibling is not None  # matched above
    copied = [line.replace(sibling.group(0), image) for line in lines[start:stop]]
    if not copied[-1].endswith("\n"):
        copied[-1] += "\n"
    if not lines[stop - 1].endswith("\n"):
        lines[stop - 1] += "\n"
    lines[stop:stop] = copied

    def one_more(before: list[Any], after: list[Any]) -> bool:
        added = [x for x in after if x not in before]
        return (
            len(after) == len(before) + 1
            and [x for x in after if x in before] == before
            and len(added) == 1
            and added[0].get("name") == image
        )

    return _checked(text, "".join(lines), "images", one_more)


def summary(p: Plan) -> str:
    """What was made and what to do next, for people."""
    lines = [f"created {path}" for path in p.created]
    lines += [f"updated {path}" for path in p.changed]
    lines += [f"skipped {note}" for note in p.skipped]
    host = f"{p.name}.{NAMESPACE}.localhost:8080"
    lines += ["", "next:", f"  pytest functions/{p.name}"]
    lines.append("  knfn dev --watch      (a running one picks the new Service up by itself)")
    if p.event_type is None:
        lines.append(f"  curl 'http://{host}/?name=Ada'")
    else:
        lines.append(
            "  curl -i http://broker-ingress.knative-eventing.localhost:8080/default/default "
            "-H 'ce-specversion: 1.0' -H 'ce-id: try-1' -H 'ce-source: /curl' "
            f"-H 'ce-type: {p.event_type}' -H 'Content-Type: application/json' -d '{{}}'"
        )
        lines.append(f"  knfn logs {p.name}")
    lines.append(f"  knfn check {p.name}")
    lines.append(f"  for a cluster image, add {p.name} to CLUSTER_FUNCTIONS in mk/cluster.mk")
    return "\n".join(lines)
