"""Factors 7 (port binding), 8 (concurrency) and 9 (disposability): what the code and the
manifest say. Whether the function really binds $PORT, how fast it starts and how it stops
are measured (measure.py); these are the parts the source alone shows.
"""

from __future__ import annotations

import ast

from knfn.check.model import Finding
from knfn.check.source import Subject, calls, dotted
from knfn.serving.autoscaler_config import GROUP

SERVERS = frozenset(
    {
        "uvicorn.run",
        "waitress.serve",
        "http.server.HTTPServer",
        "http.server.ThreadingHTTPServer",
        "socketserver.TCPServer",
        "socketserver.ThreadingTCPServer",
        "wsgiref.simple_server.make_server",
        "aiohttp.web.run_app",
        "bottle.run",
    }
)
FORKS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.setsid",
        "os.daemon",
        "multiprocessing.Process",
        "multiprocessing.Pool",
        "daemon.DaemonContext",
        "concurrent.futures.ProcessPoolExecutor",
    }
)
THREADS = frozenset({"threading.Thread", "threading.Timer", "_thread.start_new_thread"})


def port_binding(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    apps = _flask_apps(subject)
    for module, call, name in calls(subject.source):
        own_app = name.endswith(".run") and name.rsplit(".", 1)[0] in apps
        if name in SERVERS or own_app or name.endswith("socket().bind"):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} {name}(...) starts a server of its own",
                    "let functions-framework serve the function on $PORT",
                )
            )
    return found


def _flask_apps(subject: Subject) -> set[str]:
    names: set[str] = set()
    for _, node in subject.source.nodes():
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and dotted(node.value.func) in ("Flask", "flask.Flask", "FastAPI", "fastapi.FastAPI")
        ):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def concurrency(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module, call, name in calls(subject.source):
        if name in FORKS:
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} {name}(...) manages processes of its own",
                    "serve one request stream per process; the autoscaler adds replicas",
                )
            )
        elif name in THREADS:
            found.append(
                Finding(
                    "warn",
                    f"{module.at(call)} {name}(...) runs background work the autoscaler cannot see",
                    "do the work in a request, or as an event to another function",
                )
            )
    if _annotation(subject, "max-scale", "maxScale") == "1":
        found.append(
            Finding(
                "warn",
                f"{subject.manifest}: {GROUP}/max-scale is 1: it cannot scale out",
                "raise max-scale, or leave it unset",
            )
        )
    return found


def concurrency_passed(subject: Subject) -> str:
    cc = subject.service.container_concurrency
    metric = _annotation(subject, "metric") or "concurrency"
    top = _annotation(subject, "max-scale", "maxScale") or "unbounded"
    return (
        f"scales out by replicas on {metric} (containerConcurrency {cc or 'unlimited'}, "
        f"max-scale {top}); no processes or daemons of its own"
    )


def _annotation(subject: Subject, *names: str) -> str | None:
    """An autoscaling annotation of the revision template, in either spelling."""
    ann = subject.service.annotations
    return next((ann[f"{GROUP}/{n}"] for n in names if f"{GROUP}/{n}" in ann), None)


def disposability(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module, call, name in calls(subject.source):
        texts = [ast.unparse(a) for a in call.args]
        term = any("SIGTERM" in t for t in texts)
        if name == "signal.signal" and term and any("SIG_IGN" in t for t in texts[1:]):
            found.append(Finding("fail", f"{module.at(call)} ignores SIGTERM", _FIX_TERM))
        elif name == "signal.pthread_sigmask" and term and "SIG_UNBLOCK" not in texts[0]:
            found.append(Finding("fail", f"{module.at(call)} blocks SIGTERM", _FIX_TERM))
    for stmt in (s for m in subject.source.modules for s in m.tree.body):
        value = stmt.value if isinstance(stmt, ast.Expr) else None
        if isinstance(value, ast.Call) and dotted(value.func) in ("time.sleep", "sleep"):
            found.append(
                Finding(
                    "fail",
                    f"sleeps at import (line {stmt.lineno}): every cold start waits",
                    "start fast; do slow set-up lazily or in an admin process",
                )
            )
    return found


_FIX_TERM = "let SIGTERM reach the server: it drains in-flight requests, then exits"
