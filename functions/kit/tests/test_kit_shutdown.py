"""kit.shutdown: resources closed on SIGTERM (chaining to the previous handler) and at exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kit import shutdown
from kit.testing import closed_port

SERVER = Path(__file__).with_name("tiny_shutdown.py")


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    shutdown.close_all()
    yield
    shutdown.close_all()


def test_close_all_closes_newest_first_and_collects_errors() -> None:
    """Every resource is closed, newest first; a failing close does not stop the others."""
    closed: list[str] = []

    def failing() -> None:
        closed.append("b")
        raise OSError("already gone")

    shutdown.register("a", lambda: closed.append("a"))
    shutdown.register("b", failing)
    shutdown.register("c", lambda: closed.append("c"))
    failures = shutdown.close_all()
    assert closed == ["c", "b", "a"]
    assert [(name, str(error)) for name, error in failures] == [("b", "already gone")]
    assert shutdown.registered() == []
    assert shutdown.close_all() == []


def test_install_off_the_main_thread_is_refused() -> None:
    """signal handlers can only be set on the main thread; install() says False elsewhere."""
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(shutdown.install()))
    worker.start()
    worker.join()
    assert result == [False]


def run_child(body: str) -> subprocess.CompletedProcess[str]:
    """Run a Python child that prints "ready", wait for it, SIGTERM it, collect its output."""
    script = textwrap.dedent(body)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=10)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_sigterm_closes_then_chains_to_the_previous_handler() -> None:
    """On SIGTERM resources close first, then the handler that was there before runs."""
    result = run_child(
        """
        import signal, sys, time
        def previous(signum, frame):
            print("previous handler", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, previous)
        from kit import shutdown
        shutdown.register("pool", lambda: print("pool closed", flush=True))
        print("ready", flush=True)
        time.sleep(30)
        """
    )
    ours = ("pool closed", "previous handler")
    order = [line for line in result.stdout.splitlines() if line in ours]
    assert order == ["pool closed", "previous handler"]
    assert result.returncode == 3


def test_sigterm_with_default_disposition_still_kills_the_process() -> None:
    """With no previous handler, the process closes its resources and dies of SIGTERM."""
    result = run_child(
        """
        import time
        from kit import shutdown
        shutdown.register("client", lambda: print("client closed", flush=True))
        print("ready", flush=True)
        time.sleep(30)
        """
    )
    assert "client closed" in result.stdout
    assert result.returncode == -signal.SIGTERM


def test_gunicorn_worker_closes_resources_on_sigterm(tmp_path: Path) -> None:
    """Under functions-framework (gunicorn), SIGTERM drains the worker and closes its pool."""
    marker = tmp_path / "closed"
    port = closed_port()
    env = {
        **os.environ,
        "FUNCTION_TARGET": "opener",
        "FUNCTION_SIGNATURE_TYPE": "http",
        "PORT": str(port),
        "MARKER": str(marker),
    }
    binary = Path(sys.executable).with_name("functions-framework")
    server = subprocess.Popen(
        [str(binary), "--source", str(SERVER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        assert answer.text == "opened"
        assert not marker.exists()
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=15)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert marker.read_text().startswith("closed by pid ")
    assert b'"resource closed"' in output
