"""Helpers for testing functions built on the kit: a real HTTP sink, a closed port, an app.

`RecordingSink` is a real HTTP server on a loopback port that records every request and
answers with scripted statuses: point K_SINK at it to see exactly what a function sent.
Nothing here is a mock; the bytes cross a real socket.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import flask
import functions_framework
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from kit import binding


@dataclass(frozen=True)
class Received:
    """One request the sink received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def event(self) -> CloudEvent:
        """The request parsed as a CloudEvent (raises `InvalidEvent` if it is not one)."""
        return binding.from_http(self.headers, self.body)


class RecordingSink:
    """A loopback HTTP server recording requests; answers `statuses` in order, then 202."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.requests: list[Received] = []
        self._statuses = list(statuses)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        """The sink's base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.02)

    def start(self) -> RecordingSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RecordingSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _next_status(self) -> int:
        with self._lock:
            return self._statuses.pop(0) if self._statuses else 202

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                sink._record(Received(self.command, self.path, headers, body))
                status = sink._next_status()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep test output clean

        return Handler


@contextmanager
def recording_sink(statuses: Iterable[int] = ()) -> Iterator[RecordingSink]:
    """A started `RecordingSink`, stopped afterwards."""
    with RecordingSink(statuses) as sink:
        yield sink


def closed_port() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def function_source(tests_file: str) -> Path:
    """The `main.py` next to a function's `tests/` directory, given a test's `__file__`."""
    return Path(tests_file).resolve().parent.parent / "main.py"


@dataclass(frozen=True)
class LoadedFunction:
    """A function loaded the way functions-framework serves it, plus its module."""

    app: flask.Flask
    module: ModuleType

    def client(self) -> FlaskClient:
        return self.app.test_client()


def load_function(source: Path, target: str) -> LoadedFunction:
    """Load `source` with functions-framework (HTTP signature), reading the current env.

    The module runs afresh on every call, so settings and clients never leak between tests
    that change the environment. Function folders with hyphens are not importable packages;
    loading by path is what the framework does anyway.
    """
    create_app: Callable[..., flask.Flask] = functions_framework.create_app
    # create_app writes these two into os.environ; put them back so nothing leaks out.
    saved = {name: os.environ.get(name) for name in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE")}
    try:
        app = create_app(target, source=str(source), signature_type="http")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return LoadedFunction(app=app, module=sys.modules[source.stem])


class _SetEnv(Protocol):
    def setenv(self, name: str, value: str) -> None: ...


class FunctionLoader:
    """Loads one function afresh per call, with extra env set through pytest's monkeypatch.

    Use it as a fixture: ``yield FunctionLoader(monkeypatch, SOURCE, "catalog")``, then in a
    test ``start(INGEST_MAX_BYTES="10").client()``.
    """

    def __init__(self, monkeypatch: _SetEnv, source: Path, target: str, **env: str) -> None:
        self._monkeypatch, self._source, self._target = monkeypatch, source, target
        monkeypatch.setenv("FUNCTION_TARGET", target)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    def __call__(self, **env: str) -> LoadedFunction:
        for name, value in env.items():
            self._monkeypatch.setenv(name, value)
        return load_function(self._source, self._target)
