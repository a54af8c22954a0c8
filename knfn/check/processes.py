"""Factor 6, processes: stateless and share-nothing, read from the code.

Two things make a process keep state between requests: a handler that changes module-level
state (a ``global`` assigned, a module-level list/dict/set changed in place), and files written
outside /tmp (the one writable place of a Knative container with a read-only root filesystem:
see knative/base/service-*.yaml). Files that are logs are factor 11's (parity.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from knfn.check.model import Finding
from knfn.check.source import Module, Subject, calls, constant_str, dotted

MUTABLE_CALLS = frozenset(
    {
        "list",
        "dict",
        "set",
        "bytearray",
        "collections.deque",
        "collections.defaultdict",
        "collections.Counter",
        "collections.OrderedDict",
        "deque",
        "defaultdict",
        "Counter",
        "OrderedDict",
    }
)
MUTATORS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "add",
        "update",
        "setdefault",
        "pop",
        "popitem",
        "remove",
        "discard",
        "clear",
        "appendleft",
        "extendleft",
        "popleft",
        "__setitem__",
    }
)
WRITE_METHODS = frozenset({"write_text", "write_bytes", "mkdir", "touch", "symlink_to"})
TEMP_HINTS = ("tempfile", "gettempdir", "mkdtemp", "mkstemp", "TemporaryFile", "TMPDIR")
FIX_STATE = "keep state in Postgres or S3; a replica may serve any request, or none again"


@dataclass(frozen=True)
class Write:
    """A place the code writes a file."""

    module: Module
    node: ast.AST
    target: str  # the path as written, or the expression's text
    where: str  # "tmp" | "log" | "code" | "elsewhere" | "unknown"


def _mutable(value: ast.AST) -> bool:
    if isinstance(value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp):
        return True
    return isinstance(value, ast.Call) and dotted(value.func) in MUTABLE_CALLS


def module_state(module: Module) -> set[str]:
    """Names bound at module level to mutable containers."""
    names: set[str] = set()
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Assign) and _mutable(stmt.value):
            names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
        elif (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
            and _mutable(stmt.value)
        ):
            names.add(stmt.target.id)
    return names


def constants(module: Module) -> dict[str, ast.expr]:
    """Names assigned once at module level -> the expression they were given."""
    seen: dict[str, list[ast.expr]] = {}
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Assign):
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    seen.setdefault(t.id, []).append(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value and isinstance(stmt.target, ast.Name):
            seen.setdefault(stmt.target.id, []).append(stmt.value)
    return {name: values[0] for name, values in seen.items() if len(values) == 1}


def _functions(module: Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _locals(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = fn.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def state_changes(module: Module) -> Iterator[tuple[ast.AST, str, str]]:
    """(node, function, name) for each change a function makes to module-level state."""
    state = module_state(module)
    for fn in _functions(module):
        declared = {n for s in ast.walk(fn) if isinstance(s, ast.Global) for n in s.names}
        local = _locals(fn) - declared
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                if node.id in declared:
                    yield node, fn.name, node.id
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
                base = dotted(node.value)
                if base in state and base not in local:
                    yield node, fn.name, base
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = dotted(node.func.value)
                if node.func.attr in MUTATORS and base in state and base not in local:
                    yield node, fn.name, base


def _mode(call: ast.Call, position: int) -> str:
    mode = call.args[position] if len(call.args) > position else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    return constant_str(mode) or "r"


def _classify(expr: ast.AST | None) -> tuple[str, str]:
    """(target text, where) of a path expression."""
    if expr is None:
        return "?", "unknown"
    text = ast.unparse(expr)
    literal = constant_str(expr)
    if literal is not None:
        where = "tmp" if literal == "/tmp" or literal.startswith("/tmp/") else "elsewhere"
        if literal.endswith(".log"):
            where = "log"
        elif not literal.startswith("/"):
            where = "code"  # relative: the working directory is the function's folder
        return literal, where
    if text.rstrip("'\")").endswith(".log"):
        return text, "log"
    if any(h in text for h in TEMP_HINTS) or "'/tmp" in text or '"/tmp' in text:
        return text, "tmp"
    if "__file__" in text or "os.getcwd" in text or "Path.cwd" in text:
        return text, "code"
    return text, "unknown"


def writes(subject: Subject) -> list[Write]:
    """Every place the code opens or makes a file for writing, classified by where."""
    out: list[Write] = []
    for module, call, name in calls(subject.source):
        target: ast.AST | None = None
        if name in ("open", "io.open", "codecs.open") and call.args:
            if any(c in _mode(call, 1) for c in "wax+"):
                target = call.args[0]
            else:
                continue
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "open" and name != "open":
            if not any(c in _mode(call, 0) for c in "wax+"):
                continue
            target = call.func.value
        elif isinstance(call.func, ast.Attribute) and call.func.attr in WRITE_METHODS:
            target = call.func.value
        elif (
            name
            in (
                "shutil.copy",
                "shutil.copyfile",
                "shutil.copy2",
                "shutil.move",
                "os.makedirs",
                "os.mkdir",
                "os.rename",
                "os.replace",
            )
            and call.args
        ):
            target = call.args[-1] if "copy" in name or "move" in name else call.args[0]
        else:
            continue
        bound = constants(module)
        if isinstance(target, ast.Name) and target.id in bound:
            target = bound[target.id]  # a module-level constant path: judge what it holds
        if isinstance(target, ast.Call) and dotted(target.func) in ("Path", "pathlib.Path"):
            target = target.args[0] if len(target.args) == 1 else target
        text, where = _classify(target)
        out.append(Write(module, call, text, where))
    return out


def processes(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module in subject.source.modules:
        for node, fn, name in state_changes(module):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} {fn}() changes the module-level "
                    f"{name}, which outlives the request",
                    FIX_STATE,
                )
            )
    for w in writes(subject):
        where = w.module.at(w.node)
        if w.where in ("code", "elsewhere"):
            found.append(
                Finding(
                    "fail",
                    f"{where} writes {w.target} outside /tmp",
                    "write scratch files under /tmp (tempfile); keep data in S3 or Postgres",
                )
            )
        elif w.where == "unknown":
            found.append(
                Finding(
                    "warn",
                    f"{where} writes to {w.target}: cannot tell it is under /tmp",
                    "build the path with tempfile",
                )
            )
    return found
