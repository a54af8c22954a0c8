"""A revision's template process.

Started as ``python -P -m knfn.serving.template_main CONTROL_FD PARENT_PID SCRIPT``, or forked
by the root template (``... template_main --root``: knfn/serving/template_root_main.py).

It does what ``functions-framework`` (SCRIPT) does up to the moment it would serve: reads its
options from the environment with the CLI's own click command, imports the function and builds
the app (``create_app``). Then, instead of serving, it waits on the control socket
(knfn/serving/template_wire.py) and forks a child per request. The child becomes what a spawned
replica is: its own session, output on the pipe it was sent, and functions-framework's server
(gunicorn, with the CLI's options). It builds that server (the CLI's options, gunicorn's
application and arbiter: some 5 ms) before it knows its port, then waits on its start pipe for
the replica's PORT, binds HOST:PORT and serves; so knfn can fork one ahead of need and a cold
start skips all of that. The one addition is a ``when_ready`` hook that writes a byte to the
ready pipe once the arbiter listens (what a TCP probe of a spawned replica waits for: a request
sent now waits in the listen backlog for the worker), so knfn needs no probe.

Forking is only safe from a single thread: a function that starts threads at import is
reported as ``Failed`` and its revision's replicas are spawned. The template dies with knfn
(parent-death signal) and its replicas die with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import click

from knfn.serving import template_wire as wire

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PRELOAD = ("gunicorn.arbiter", "gunicorn.glogging", "concurrent.futures.thread", "encodings.idna")


@dataclass(frozen=True)
class Child:
    """What a forked child has once it has left the template's loop: its pipes."""

    output_fd: int
    ready_fd: int
    start_fd: int


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent (thread) dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(1)


def cli_params() -> dict[str, Any]:
    """functions-framework's options, parsed from the environment by its own command."""
    from functions_framework._cli import _cli

    with _cli.make_context("functions-framework", []) as ctx:
        return dict(ctx.params)


def build_app() -> Any:
    """The app, exactly as the CLI builds it; fails if the import left threads running."""
    from functions_framework import create_app
    from functions_framework._http import create_server

    params = cli_params()
    if params["asgi"]:
        from functions_framework.aio import create_asgi_app

        app = create_asgi_app(  # type: ignore[no-untyped-call]
            params["target"], params["source"], params["signature_type"]
        )
    else:
        app = create_app(  # type: ignore[no-untyped-call]
            params["target"], params["source"], params["signature_type"]
        )
    # Import the server class, and what a replica imports between its fork and its first
    # answer (measured), once here rather than in every replica.
    server = create_server(app, params["debug"])  # type: ignore[no-untyped-call]
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    warm_up(app, server)

    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        raise RuntimeError(f"fork unsafe: the function started threads at import: {threads}")
    return app


def warm_up(app: Any, server: Any) -> None:
    """First-use work every replica would repeat, done once here; none of it calls the function
    or leaves state a replica sees: werkzeug compiles its URL matcher on the first request's
    bind (measured), and gunicorn's first Config costs twice a later one."""
    url_map = getattr(app, "url_map", None)
    if url_map is not None:
        url_map.update()
    if server.server_class.__module__.endswith("gunicorn"):
        from gunicorn.config import Config  # type: ignore[import-untyped]

        Config()


def serve_forks(control: socket.socket) -> Child:
    """Answer fork requests and report reaped replicas until knfn closes the channel (then
    exit); returns only in a forked child."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wakeup fd does the work
    with selectors.DefaultSelector() as selector, contextlib.ExitStack() as closing:
        closing.callback(os.close, wake_r)
        closing.callback(os.close, wake_w)
        selector.register(control, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == wake_r:
                    os.read(wake_r, 4096)
                    reap(control)
                    continue
                data, fds, _flags, _addr = socket.recv_fds(control, wire.MAX_MESSAGE, 3)
                if not data:
                    sys.exit(0)
                child = fork(control, data, fds)
                if child is not None:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    return child


def fork(control: socket.socket, data: bytes, fds: list[int]) -> Child | None:
    try:
        request = wire.decode(data)
        if not isinstance(request, wire.Fork) or len(fds) != 3:
            raise wire.WireError(f"expected a Fork with 3 fds, got {data[:80]!r}, {len(fds)} fds")
    except wire.WireError as exc:
        for fd in fds:
            os.close(fd)
        control.send(wire.encode(wire.ForkFailed(-1, str(exc))))
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    template = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        die_with_parent(template)
        return Child(fds[0], fds[1], fds[2])
    for fd in fds:
        os.close(fd)
    control.send(wire.encode(wire.Forked(request.id, pid)))
    return None


def reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(wire.encode(wire.Exited(pid, os.waitstatus_to_exitcode(status))))


def serve_replica(child: Child, app: Any) -> None:
    """In the child: build the server as the CLI's last line does, wait for the replica's
    environment on the start pipe, then serve on its PORT (EOF instead: exit, unused)."""
    os.dup2(child.output_fd, 1)
    os.dup2(child.output_fd, 2)
    os.close(child.output_fd)
    params = cli_params()
    server = prepare(app, params, child.ready_fd)
    start = read_start(child.start_fd)
    if start is None:
        os._exit(0)
    wire.apply_delta(os.environ, start.delta)
    if not start.delta.keys <= {"PORT"}:
        params = cli_params()  # never sent by knfn (template.py); read them all again
    elif "PORT" in start.delta.set:
        params["port"] = click.INT(start.delta.set["PORT"])  # as the CLI's --port reads it
    server.run(params["host"], params["port"])


class Prepared(Protocol):
    def run(self, host: str, port: int) -> None: ...


def prepare(app: Any, params: dict[str, Any], ready_fd: int) -> Prepared:
    """functions-framework's server for app, built as far as it can be without the port."""
    from functions_framework._http import create_server

    server = create_server(app, params["debug"])  # type: ignore[no-untyped-call]
    if not server.server_class.__module__.endswith("gunicorn"):
        os.close(ready_fd)  # no hook: knfn probes as for a spawned replica
        return cast(Prepared, server)
    server.options["when_ready"] = lambda arbiter: _notify(ready_fd)
    return GunicornPrepared(server, params)


class GunicornPrepared:
    """gunicorn's application (its Config) and arbiter built before the port is known; the
    bind address set once it is. What ``HTTPServer.run`` and ``BaseApplication.run`` do, in
    two halves (functions_framework/_http/__init__.py, gunicorn/app/base.py)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]

        self.application = server.server_class(
            server.app, params["host"], params["port"], server.debug, **server.options
        )
        self.arbiter = Arbiter(self.application)

    def run(self, host: str, port: int) -> None:
        bind = f"{host}:{port}"
        self.application.options["bind"] = bind
        self.application.cfg.set("bind", bind)
        self.arbiter.address = self.application.cfg.address
        try:
            self.arbiter.run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)


def _notify(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"R")
        os.close(fd)


def read_start(fd: int) -> wire.Start | None:
    """The Start knfn writes on the start pipe (blocking until EOF); None: EOF alone."""
    chunks = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(wire.MAX_MESSAGE):
            chunks.append(chunk)
    if not chunks:
        return None
    message = wire.decode(b"".join(chunks))
    if not isinstance(message, wire.Start):
        raise wire.WireError(f"expected a Start on the start pipe, got {type(message).__name__}")
    return message


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--root"]:  # the root template (template_root_main.py)
        from knfn.serving import template_root_main

        template_root_main.main(argv[2:])
        return
    run(int(argv[1]), int(argv[2]), argv[3])


def run(control_fd: int, parent: int, script: str) -> None:
    """A revision's template, from its start (spawned, or forked by the root) to its exit."""
    die_with_parent(parent)
    # As when SCRIPT runs: its directory first on sys.path, its path as argv[0].
    sys.path.insert(0, str(Path(script).parent))
    sys.argv = [script]
    control = socket.socket(fileno=control_fd)
    try:
        app = build_app()
    except BaseException as exc:
        traceback.print_exc()
        reason = traceback.format_exception_only(exc)[-1].strip()
        control.send(wire.encode(wire.Failed(reason)))
        sys.exit(1)
    # Objects that exist now are never collected in a replica: its collections then leave the
    # shared pages alone, and the forks stay cheap and small (the gc.freeze documentation).
    gc.freeze()
    control.send(wire.encode(wire.Ready(os.getpid())))
    with control:
        child = serve_forks(control)
    serve_replica(child, app)


if __name__ == "__main__":
    main(sys.argv)
