"""Replicas: one ``functions-framework`` process each, probed until ready, stopped in stages.

A replica runs the image's command with the revision's environment, in its own process group,
so that stopping it (SIGTERM, the grace period, then SIGKILL) reaches everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from knfn.errors import KnfnError
from knfn.logs import Printer

PROBE_INTERVAL = 0.05  # queue-proxy's aggressive readiness probing (runtime contract)


class ReplicaError(KnfnError):
    """A replica exited or never became ready."""


@dataclass(frozen=True)
class ReplicaSpec:
    service: str
    revision: str
    index: int
    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str]
    port: int
    readiness_path: str | None = None

    @property
    def name(self) -> str:
        return f"{self.service}/{self.revision}/{self.index}"


class Replica:
    """A running function process and the task that copies its output to the printer."""

    def __init__(self, spec: ReplicaSpec, printer: Printer) -> None:
        self.spec = spec
        self._printer = printer
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.ready = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            cwd=self.spec.cwd,
            env=self.spec.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._copy_output())

    async def _copy_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self._printer.line(self.spec.name, raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exited(self) -> bool:
        return self._proc is not None and self._proc.returncode is not None

    async def wait_exit(self) -> int:
        """Wait until the process exits; its return code."""
        assert self._proc is not None
        return await self._proc.wait()

    async def wait_ready(self, timeout: float) -> float:
        """Probe every 50 ms until ready; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self._proc is None or self._proc.returncode is not None:
                raise ReplicaError(f"{self.spec.name} exited before it was ready")
            if await self._probe():
                self.ready = True
                return time.monotonic() - started
            await asyncio.sleep(PROBE_INTERVAL)
        raise ReplicaError(f"{self.spec.name} was not ready within {timeout:.0f}s")

    async def _probe(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.spec.port), 0.1
            )
        except (OSError, TimeoutError):
            return False
        try:
            if self.spec.readiness_path is None:
                return True
            writer.write(
                f"GET {self.spec.readiness_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "User-Agent: knfn-probe\r\nConnection: close\r\n\r\n".encode()
            )
            status_line = await asyncio.wait_for(reader.readline(), 1.0)
            parts = status_line.split()
            return len(parts) > 1 and parts[1][:1] in (b"2", b"3")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to grace seconds, then SIGKILL the group."""
        proc = self._proc
        if proc is None:
            return
        self.ready = False
        if proc.returncode is None:
            # 1. Ask the server to drain and exit (gunicorn finishes in-flight requests).
            _killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        # 2. Whatever is left of the group goes, the server's workers included.
        _killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        # 3. Drain the last output lines.
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
