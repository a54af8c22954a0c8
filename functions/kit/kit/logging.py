"""Structured logs: one JSON object per line on stdout, written and flushed at once.

Every line carries an ISO-8601 UTC `timestamp`, the `level`, the `message`, and the Knative
`service` and `revision` (from K_SERVICE and K_REVISION) so that lines from many replicas can
be told apart once the platform collects them. While a request is handled, its execution id
(the `Function-Execution-Id` header, or a fresh one) and, for a CloudEvent, the event's `ce_id`,
`ce_type` and `ce_source` are bound through contextvars and appear on every line logged in it.

Records from the standard `logging` module (botocore, psycopg_pool, ...) are rendered the same
way, so stdout stays JSON only (factor 11: the app writes an event stream, the platform routes).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from kit import config

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXECUTION_ID_HEADER = "Function-Execution-Id"
# Libraries that are chatty at INFO/DEBUG; they log at WARNING and above whatever LOG_LEVEL says.
_QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "werkzeug")


def log_level(raw: str) -> str:
    """Parse LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)."""
    value = raw.strip().upper()
    if value == "WARN":
        value = "WARNING"
    if value not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")
    return value


@dataclass(frozen=True)
class LogSettings:
    """Logging settings: the level and the Knative identity stamped on every line."""

    level: Annotated[str, config.env("LOG_LEVEL", log_level, default="INFO", doc="minimum level")]
    service: Annotated[
        str | None, config.env("K_SERVICE", default=None, doc="Knative service (set by Knative)")
    ]
    revision: Annotated[
        str | None, config.env("K_REVISION", default=None, doc="Knative revision (set by Knative)")
    ]


class StdoutLogger:
    """Writes each rendered line to the current `sys.stdout` and flushes it.

    `sys.stdout` is looked up per line, not bound once, so redirection (tests, the
    framework) keeps working; the lock keeps lines from threads whole.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            try:
                sys.stdout.write(message + "\n")
                sys.stdout.flush()
            except ValueError:
                # stdout already closed: only at interpreter exit, nothing left to tell.
                pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _StdoutHandler(logging.Handler):
    """A stdlib handler that writes formatted records through `StdoutLogger`."""

    def __init__(self) -> None:
        super().__init__()
        self._out = StdoutLogger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _identity(settings: LogSettings) -> Processor:
    def add_identity(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", settings.service)
        event_dict.setdefault("revision", settings.revision)
        return event_dict

    return add_identity


_FIRST = ("timestamp", "level", "message", "service", "revision", "logger_name")


def _add_stdlib_name(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger_name"] = record.name
    return event_dict


def _render(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """One JSON line, the fields a human scans for first."""
    ordered = {key: event_dict.pop(key) for key in _FIRST if key in event_dict}
    ordered.update(event_dict)
    return json.dumps(ordered, default=str, ensure_ascii=False)


def configure(settings: LogSettings) -> None:
    """Set up structlog and the stdlib root logger. Safe to call again (tests do)."""
    level = logging.getLevelNamesMapping()[settings.level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _identity(settings),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: StdoutLogger(),
        cache_logger_on_first_use=False,
    )
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _add_stdlib_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.EventRenamer("message"),
                _render,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `name` (usually `__name__`) is added as `logger_name`.

    The logger resolves the configuration when it logs, not when it is made, so module-level
    loggers created before `configure` still follow it.
    """
    return structlog.get_logger(**({"logger_name": name} if name else {}))


def new_execution_id() -> str:
    """A fresh id for a request that arrived without one."""
    return uuid.uuid4().hex[:16]


@contextmanager
def request_scope(execution_id: str | None, **fields: Any) -> Iterator[str]:
    """Bind the execution id (the `Function-Execution-Id` header, or a new id when it is
    None or empty) and `fields` for the duration of one request, then clear them.

    Clearing on both ends matters: a worker thread serves many requests, and nothing bound
    for one may leak into the next.
    """
    execution_id = execution_id or new_execution_id()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(execution_id=execution_id, **fields)
    try:
        yield execution_id
    finally:
        structlog.contextvars.clear_contextvars()


def bind(**fields: Any) -> None:
    """Add fields to the current request's log context (e.g. the CloudEvent's id)."""
    structlog.contextvars.bind_contextvars(**fields)


def bound() -> MutableMapping[str, Any]:
    """The fields bound in the current context (for tests and diagnostics)."""
    return structlog.contextvars.get_contextvars()
