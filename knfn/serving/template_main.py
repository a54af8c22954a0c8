"""A revision's template process.

Started as ``python -P -m knfn.serving.template_main CONTROL_FD PARENT_PID SCRIPT``, or forked
by the root template (``... template_main --root``: knfn/serving/template_root_main.py).

It does what ``functions-framework`` (SCRIPT) does up to the moment it would serve: reads its
options from the environment with the CLI's own click command, imports the function and builds
the app (``create_app``). Then, instead of serving, it waits on the control socket
(knfn/serving/template_wire.py) and forks a child per request. The child becomes what a spawned
replica is: its own session, output on the pipe it was sent, the replica's environment (the
template's and the ``Fork``'s delta: its PORT), and functions-framework's server run as the
CLI's last line runs it (gunicorn, with the CLI's options). The one addition is a
``post_worker_init`` hook: gunicorn's worker writes a byte to the ready pipe once it serves, so
knfn knows without probing it. knfn forks one child per revision ahead of need, a spare that is
a whole server before any request wants it (template.py).

Before that byte the worker sends itself one request, as a readiness probe would: ``GET
/robots.txt``, which functions-framework answers itself (404) without calling the function. A
fresh worker's first request costs several times a later one (its first thread, lazy imports,
copy-on-write faults in the pages the request path touches: measured 39 ms against 4.6 ms on a
loaded 2-core machine); paid here, ahead of need, a cold start does not pay it. Only when the
app is an HTTP function whose /robots.txt is functions-framework's and no request hook of the
function's would run for it (warm_up_path); otherwise the first request pays as a spawned
replica's does.

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
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knfn.serving import fork_loop
from knfn.serving import template_wire as wire

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PRELOAD = ("gunicorn.arbiter", "gunicorn.glogging", "concurrent.futures.thread", "encodings.idna")


@dataclass(frozen=True)
class Child:
    """What a forked child has once it has left the template's loop: its pipes and env."""

    output_fd: int
    ready_fd: int
    delta: wire.EnvDelta


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
    return fork_loop.serve(control, lambda data, fds: fork(control, data, fds), _exited)


def fork(control: socket.socket, data: bytes, fds: list[int]) -> Child | None:
    try:
        request = wire.decode(data)
        if not isinstance(request, wire.Fork) or len(fds) != 2:
            raise wire.WireError(f"expected a Fork with 2 fds, got {data[:80]!r}, {len(fds)} fds")
    except wire.WireError as exc:
        fork_loop.refuse(control, fds, wire.encode(wire.ForkFailed(-1, str(exc))))
        return None
    template = os.getpid()
    pid = fork_loop.fork(fds)
    if pid == 0:
        os.setsid()
        die_with_parent(template)
        return Child(fds[0], fds[1], request.delta)
    control.send(wire.encode(wire.Forked(request.id, pid)))
    return None


def _exited(pid: int, returncode: int) -> bytes:
    return wire.encode(wire.Exited(pid, returncode))


def serve_replica(child: Child, app: Any) -> None:
    """In the child: the replica's environment, then serve as the CLI's last line does."""
    from functions_framework._http import create_server

    os.dup2(child.output_fd, 1)
    os.dup2(child.output_fd, 2)
    os.close(child.output_fd)
    wire.apply_delta(os.environ, child.delta)
    params = cli_params()  # PORT among them, as the CLI's --port reads it
    server = create_server(app, params["debug"])  # type: ignore[no-untyped-call]
    if server.server_class.__module__.endswith("gunicorn"):
        host = "127.0.0.1" if params["host"] in ("", "0.0.0.0") else params["host"]
        path = warm_up_path(app)
        server.options["post_worker_init"] = lambda worker: announce(
            child.ready_fd, (host, params["port"]), path
        )
    else:
        os.close(child.ready_fd)  # no hook: knfn probes as for a spawned replica
    server.run(params["host"], params["port"])


WARM_UP_PATH = "/robots.txt"
WARM_UP_TIMEOUT = 5.0


def warm_up_path(app: Any) -> str | None:
    """``/robots.txt`` if a request for it never reaches the function's code: the route is
    functions-framework's own 404 (HTTP functions: functions_framework/__init__.py
    ``_configure_app``) and the function registered no request hook or error handler."""
    url_map, views = getattr(app, "url_map", None), getattr(app, "view_functions", {})
    if url_map is None:  # an ASGI app
        return None
    rules = [rule for rule in url_map.iter_rules() if rule.rule == WARM_UP_PATH]
    if not rules or any(rule.endpoint != "error" for rule in rules):
        return None
    hooks = (app.before_request_funcs, app.teardown_request_funcs,
             app.url_value_preprocessors, app.url_default_functions)  # fmt: skip
    if any(any(found for found in hook.values()) for hook in hooks):
        return None
    handlers = [
        handler for by_code in app.error_handler_spec.values() for by_class in by_code.values()
        for handler in by_class.values()
    ]  # fmt: skip
    after = [f for fs in app.after_request_funcs.values() for f in fs]
    if not all(_of_framework(f) for f in [views.get("error"), *after, *handlers]):
        return None
    return WARM_UP_PATH


def _of_framework(function: Any) -> bool:
    return str(getattr(function, "__module__", "")).startswith("functions_framework")


def announce(ready_fd: int, address: tuple[str, int], path: str | None) -> None:
    """In the worker, about to serve: the warm-up request (from a thread, once the worker's loop
    accepts), then the ready byte; at once without a path."""
    if path is None:
        _notify(ready_fd)
        return

    def warm_up() -> None:
        with contextlib.suppress(OSError), socket.create_connection(address, WARM_UP_TIMEOUT) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                "User-Agent: knfn-warm-up\r\nConnection: close\r\n\r\n".encode()
            )
            while s.recv(65536):
                pass
        _notify(ready_fd)

    threading.Thread(target=warm_up, name="knfn-warm-up", daemon=True).start()


def _notify(fd: int) -> None:
    """The ready byte, from the worker; a later worker (one replaced) finds the pipe closed."""
    with contextlib.suppress(OSError):
        os.write(fd, b"R")
        os.close(fd)


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
