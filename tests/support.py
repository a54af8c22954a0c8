"""Helpers shared by the test layers: free ports, waiting for HTTP, running real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from aiohttp import web

from knfn.ports import free_port

__all__ = ["REPO", "free_port", "http_server_thread", "running", "stop_process", "wait_http"]

REPO = Path(__file__).resolve().parent.parent


def wait_http(url: str, timeout: float = 10.0) -> None:
    """Poll url until anything answers over HTTP (any status), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout}s: {exc}") from exc
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def running(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real process in its own group, stopped (SIGTERM, then SIGKILL) however the test ends."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def http_server_thread(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int
) -> Iterator[None]:
    """A real aiohttp server on a loopback port, on its own event loop in a thread, for
    synchronous tests (a subscriber that records deliveries, say)."""
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
