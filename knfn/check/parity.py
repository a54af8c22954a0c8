"""Factors 10 (dev/prod parity), 11 (logs) and 12 (admin processes), read from the code.

Parity: the same manifest runs under knfn and on Knative; code that branches on being local,
reads knfn's own variables, or keeps data in a local-only store (SQLite, dbm) breaks it.
Logs are an event stream on stdout: a file handler, a log file, or shipping logs over the
network is the platform's job, not the function's. Admin processes (schema changes, bucket
set-up) run as one-off processes, never from the function's import or handlers.
"""

from __future__ import annotations

import ast
import re

from knfn.check.model import Finding
from knfn.check.processes import writes
from knfn.check.source import Subject, calls, constant_str, imports, strings

LOCAL_STORES = frozenset({"sqlite3", "dbm", "shelve"})
STAGES = frozenset({"dev", "development", "local", "prod", "production", "staging", "test"})
LOG_ROUTERS = frozenset(
    {
        "logging.FileHandler",
        "logging.handlers.RotatingFileHandler",
        "logging.handlers.TimedRotatingFileHandler",
        "logging.handlers.WatchedFileHandler",
        "logging.handlers.SysLogHandler",
        "logging.handlers.SocketHandler",
        "logging.handlers.DatagramHandler",
        "logging.handlers.HTTPHandler",
        "logging.handlers.SMTPHandler",
    }
)
DDL = re.compile(
    r"^\s*(CREATE|ALTER|DROP)\s+(TABLE|INDEX|UNIQUE\s+INDEX|SCHEMA|EXTENSION|TYPE|VIEW)\b", re.I
)
ADMIN_CALLS = frozenset(
    {"create_bucket", "put_bucket_notification_configuration", "put_bucket_policy", "delete_bucket"}
)


def parity(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module, node, name in imports(subject.source):
        if name in LOCAL_STORES:
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} imports {name}: a local store the "
                    "cluster's replicas do not share",
                    "use the same kind of backing service everywhere: Postgres or S3",
                )
            )
    for module, call, name in calls(subject.source):
        var = constant_str(call.args[0]) if call.args else None
        if name in ("os.getenv", "os.environ.get") and var and var.startswith("KNFN_"):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} reads {var}, which only knfn sets",
                    "read only the variables the manifest gives it",
                )
            )
    for module, node in strings(subject.source):
        if str(node.value).lower() in STAGES and _compared(module.tree, node):
            found.append(
                Finding(
                    "warn",
                    f"{module.at(node)} compares with {node.value!r}: code "
                    "that behaves differently per environment",
                    "let config values differ, not code paths",
                )
            )
    return found


def _compared(tree: ast.Module, literal: ast.Constant) -> bool:
    return any(
        isinstance(n, ast.Compare) and literal in (n.left, *n.comparators) for n in ast.walk(tree)
    )


def parity_passed(subject: Subject) -> str:
    return (
        f"the same manifest ({subject.manifest}) runs under knfn and on Knative; no "
        "local-only branch, variable or store in the code"
    )


def logs(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module, call, name in calls(subject.source):
        to_file = name == "logging.basicConfig" and any(
            kw.arg in ("filename", "stream")
            and "stdout" not in ast.unparse(kw.value)
            and "stderr" not in ast.unparse(kw.value)
            for kw in call.keywords
        )
        if name in LOG_ROUTERS or to_file:
            found.append(
                Finding(
                    "fail", f"{module.at(call)} {name}(...) routes logs away from stdout", _FIX_LOGS
                )
            )
    for w in writes(subject):
        if w.where == "log":
            found.append(
                Finding("fail", f"{w.module.at(w.node)} writes the log file {w.target}", _FIX_LOGS)
            )
    return found


_FIX_LOGS = "log to stdout (kit.logging): one event per line; the platform collects and routes"


def logs_passed(subject: Subject) -> str:
    return "logs go to stdout as a stream; no log file and no routing in the code"


def admin(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module, node in strings(subject.source):
        if DDL.search(str(node.value)):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} changes the schema "
                    f"({str(node.value).split()[0:3]}) from the function",
                    "put it in postgres/migrations/, applied by `knfn admin "
                    "migrate` (a Job in the cluster)",
                )
            )
    for module, call, name in calls(subject.source):
        if name.rsplit(".", 1)[-1] in ADMIN_CALLS:
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} {name}(...) sets up storage from the function",
                    "do it once with `knfn admin buckets` (a Job in the cluster)",
                )
            )
    return found


def admin_passed(subject: Subject) -> str:
    jobs = ", ".join(subject.jobs) or "none in the manifests"
    return f"no schema or bucket set-up in the function; one-off admin processes: {jobs}"
