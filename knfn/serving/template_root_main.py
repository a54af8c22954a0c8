"""The root template process: the imports every revision's template shares, done once.

Started as ``python -P -m knfn.serving.template_main --root CONTROL_FD PARENT_PID [REQS...]``
with the environment every replica shares (the variables passed through from knfn's own), so
that it is a revision template's ``__main__`` and start. It imports functions-framework, Flask,
werkzeug, gunicorn and the top-level packages of the distributions pinned in the functions'
requirements files (REQS; psycopg, boto3, ...: not the project's own code, which a change under
``--watch`` must reach), and then forks each revision's template on knfn's request. The child
becomes what a spawned template is: its own session, its output on the pipe it was sent, the
revision's environment (the whole of it, replacing the root's) and working directory; then it
runs the template's own start (template_main.run), which imports the function. So eight
templates share one import of the serving stack, in CPU at start and in memory.

While it imports, it records every variable a module reads from ``os.environ``; with the
interpreter's start-up variables they are reported to knfn (template_root_wire.Preloaded), which
starts a revision's template on its own when its environment differs in one of them. Forking
is only safe from a single thread: a preload that leaves one running makes the root report
``Failed`` (every template is then spawned). It dies with knfn, and its templates with it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import socket
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from knfn.serving import fork_loop, template_main
from knfn.serving import template_root_wire as wire

# What a template imports before its function, whatever the function (functions-framework's
# app, server and gunicorn's worker); then template_main.PRELOAD.
SERVING_STACK = (
    "functions_framework",
    "functions_framework._http",
    "functions_framework._http.gunicorn",
    "flask",
    "werkzeug",
    "cloudevents.http",
    "gunicorn.app.base",
    "gunicorn.arbiter",
    "gunicorn.config",
    "gunicorn.workers.gthread",
)
PATH_MODULES = frozenset({"os", "posixpath", "genericpath", "__main__"})
# Top-level names of a distribution that are not its library.
NOT_LIBRARIES = frozenset({"test", "tests", "docs", "examples", "benchmarks"})


@dataclass(frozen=True)
class Request:
    """A spawn request, in the forked child that is to become the template."""

    spawn: wire.Spawn
    control_fd: int
    output_fd: int
    root: int
    cwd_readers: frozenset[str]


def requirement_modules(paths: Iterable[str]) -> list[str]:
    """The top-level modules of the installed distributions the requirements files name
    (comments, options and paths skipped); distributions not installed are left out."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    names: set[str] = set()
    for path in paths:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line and not line.startswith("-"):
                    with contextlib.suppress(InvalidRequirement):
                        names.add(Requirement(line).name)
    modules: list[str] = []
    for name in sorted(names):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        modules.extend(m for m in top_level(dist) if m not in modules)
    return modules


def top_level(dist: Any) -> list[str]:
    """A distribution's importable top-level names: top_level.txt, else its files' first parts."""
    listed = dist.read_text("top_level.txt")
    if listed:
        names = listed.split()
    else:
        names = sorted(
            {
                str(f.parts[0]).removesuffix(".py")
                for f in dist.files or ()
                if len(f.parts) > 1 or f.suffix == ".py"
            }
        )
    return [
        n for n in names if n.isidentifier() and not n.startswith("_") and n not in NOT_LIBRARIES
    ]


@contextlib.contextmanager
def recording_reads() -> Iterator[dict[str, str | None]]:
    """While inside: every variable read from os.environ (None: read and absent)."""
    environ = type(os.environ)
    getitem, iterate = environ.__getitem__, environ.__iter__
    read: dict[str, str | None] = {}

    def name(key: Any) -> str:
        return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)

    def recorded_getitem(self: Any, key: Any) -> Any:
        try:
            value = getitem(self, key)
        except KeyError:
            read.setdefault(name(key), None)
            raise
        read.setdefault(name(key), name(value))
        return value

    def recorded_iter(self: Any) -> Iterator[Any]:
        read[wire.ITERATED] = None
        return iterate(self)

    environ.__getitem__ = recorded_getitem  # type: ignore[method-assign]
    environ.__iter__ = recorded_iter  # type: ignore[method-assign]
    try:
        yield read
    finally:
        environ.__getitem__ = getitem  # type: ignore[method-assign]
        environ.__iter__ = iterate  # type: ignore[method-assign]


@contextlib.contextmanager
def recording_cwd() -> Iterator[set[str]]:
    """While inside: the modules on the stack whenever the working directory was read
    (os.getcwd, also through os.path.abspath and realpath)."""
    getcwd, getcwdb = os.getcwd, os.getcwdb
    readers: set[str] = set()

    def record() -> None:
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            readers.add(str(frame.f_globals.get("__name__")))
            frame = frame.f_back

    def recorded() -> str:
        record()
        return getcwd()

    def recorded_b() -> bytes:
        record()
        return getcwdb()

    os.getcwd, os.getcwdb = recorded, recorded_b
    try:
        yield readers
    finally:
        os.getcwd, os.getcwdb = getcwd, getcwdb


def move_cwd(modules: Iterable[str], old: str, new: str) -> None:
    """In a forked template: the working directory that modules kept at import (as strings in
    their globals or their classes': functions-framework's default source, gunicorn's chdir
    default, multiprocessing's ORIGINAL_DIR), moved from the root's to the template's, as if
    they had been imported there. The root works in a directory of its own, so that a string
    under it can only have come from there."""
    for name in modules:
        module = sys.modules.get(name)
        if module is None or name in PATH_MODULES:
            continue
        namespaces: list[Any] = [module]
        namespaces += [
            v for v in vars(module).values() if isinstance(v, type) and v.__module__ == name
        ]
        for namespace in namespaces:
            for key, value in list(vars(namespace).items()):
                if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
                    setattr(namespace, key, new + value[len(old) :])


def preload(modules: Iterable[str]) -> list[str]:
    """Import each module that imports; the ones imported. One that fails is skipped: the
    template that needs it fails (or not) as it would have on its own."""
    done = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # any import error: this module is not preloaded
            continue
        done.append(module)
    return done


def single_threaded() -> None:
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    tasks = len(os.listdir("/proc/self/task"))
    if threads or tasks > 1:
        raise RuntimeError(f"fork unsafe: the preloads started threads: {threads or tasks}")


def serve_spawns(control: socket.socket, cwd_readers: frozenset[str]) -> Request:
    """Answer spawn requests and report reaped templates until knfn closes the channel (then
    exit); returns only in a forked child."""
    return fork_loop.serve(
        control, lambda data, fds: fork(control, data, fds, cwd_readers), _exited
    )


def fork(
    control: socket.socket, data: bytes, fds: list[int], cwd_readers: frozenset[str]
) -> Request | None:
    try:
        spawn = wire.decode(data)
        if not isinstance(spawn, wire.Spawn) or len(fds) != 2:
            raise wire.RootWireError(f"expected a Spawn with 2 fds, got {data[:80]!r}")
    except wire.RootWireError as exc:
        fork_loop.refuse(control, fds, wire.encode(wire.SpawnFailed(-1, str(exc))))
        return None
    root = os.getpid()
    pid = fork_loop.fork(fds)
    if pid == 0:
        return Request(spawn, fds[0], fds[1], root, cwd_readers)
    control.send(wire.encode(wire.Spawned(spawn.id, pid)))
    return None


def _exited(pid: int, returncode: int) -> bytes:
    return wire.encode(wire.Exited(pid, returncode))


def become_template(request: Request) -> None:
    """In the forked child: what a spawned template starts as (own session, output on its pipe,
    the revision's environment and directory), then the template's own start."""
    os.setsid()
    template_main.die_with_parent(request.root)
    os.dup2(request.output_fd, 1)
    os.dup2(request.output_fd, 2)
    os.close(request.output_fd)
    os.environ.clear()
    os.environ.update(request.spawn.env)
    root_cwd = os.getcwd()
    try:
        os.chdir(request.spawn.cwd)
    except OSError:
        traceback.print_exc()
        sys.exit(1)
    move_cwd(request.cwd_readers, root_cwd, os.getcwd())
    template_main.run(request.control_fd, request.root, request.spawn.script)


def main(argv: list[str]) -> None:
    control_fd, parent, requirements = int(argv[0]), int(argv[1]), argv[2:]
    template_main.die_with_parent(parent)
    control = socket.socket(fileno=control_fd)
    started = dict(os.environ)
    try:
        with recording_reads() as read, recording_cwd() as cwd_readers:
            wanted = [*SERVING_STACK, *template_main.PRELOAD, *requirement_modules(requirements)]
            modules = preload(wanted)
        single_threaded()
    except BaseException as exc:
        traceback.print_exc()
        reason = traceback.format_exception_only(exc)[-1].strip()
        control.send(wire.encode(wire.Failed(reason)))
        sys.exit(1)
    gc.freeze()  # as a template does: the shared pages stay shared
    control.send(wire.encode(wire.Preloaded(os.getpid(), modules, started, read)))
    with control:
        request = serve_spawns(control, frozenset(cwd_readers))
    become_template(request)
