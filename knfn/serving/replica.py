"""Replicas: one ``functions-framework`` process each, probed until ready, stopped in stages.

A replica runs the image's command with the revision's environment, in its own process group,
so that stopping it (SIGTERM, the grace period, then SIGKILL) reaches everything it started.
It is started through pdeathsig.py, so the kernel kills it if knfn dies without stopping it,
and it is recorded in the state dir (replica_records.py) until it has been reaped.
Its output is read in bounded chunks and cut into lines of bounded length (knfn/logs.py): a
replica whose output cannot be read any more is reported as gone, to be replaced, since a full
pipe would block it while it still accepts connections.
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
from knfn.logs import LineSplitter, Printer
from knfn.serving import pdeathsig
from knfn.serving.replica_records import ReplicaRecords
from knfn.serving.template import ForkedProcess, ReplicaProcess, Template

PROBE_INTERVAL = 0.05  # queue-proxy's aggressive readiness probing (runtime contract)
READ_CHUNK = 64 * 1024  # bytes read from a replica's output at a time
DRAIN_TIMEOUT = 2.0  # for the last output after the group was killed


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
    template: Template | None = None  # fork from it when it can (template.py), else spawn

    @property
    def name(self) -> str:
        return f"{self.service}/{self.revision}/{self.index}"


class Replica:
    """A running function process and the task that copies its output to the printer."""

    def __init__(
        self, spec: ReplicaSpec, printer: Printer, records: ReplicaRecords | None = None
    ) -> None:
        self.spec = spec
        self._printer = printer
        self._records = records
        self._proc: ReplicaProcess | None = None
        self._pump: asyncio.Task[None] | None = None
        self._unreadable = asyncio.Event()
        self.output_error: BaseException | None = None
        self.ready = False
        # Where it serves: the spec's port, or that of the template's spare it took.
        self.port = spec.port

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process; call it on the event loop's thread, which lives as long as knfn
        (the parent-death signal fires when the thread that forked exits)."""
        forked = await self.spec.template.fork(self.spec.env) if self.spec.template else None
        if forked is not None:
            self.port = forked.port
        self._proc = forked or await asyncio.create_subprocess_exec(
            *pdeathsig.default_wrapper(os.getpid()),
            *self.spec.argv,
            cwd=self.spec.cwd,
            env=self.spec.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._copy_output())
        if self._records is not None and not (forked is not None and forked.recorded):
            self._records.add(self.spec.name, self._proc.pid)

    async def _copy_output(self) -> None:
        """Copy output to the printer until EOF; a failure marks the replica unreadable."""
        assert self._proc is not None and self._proc.stdout is not None
        stdout, splitter = self._proc.stdout, LineSplitter()
        try:
            while chunk := await stdout.read(READ_CHUNK):
                for piece in splitter.feed(chunk):
                    self._printer.piece(self.spec.name, piece)
            for piece in splitter.flush():
                self._printer.piece(self.spec.name, piece)
        except Exception as exc:  # whatever it was, nobody reads the pipe any more
            self.output_error = exc
            self._unreadable.set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exited(self) -> bool:
        return self._proc is not None and self._proc.returncode is not None

    async def wait_gone(self) -> str:
        """Wait until the process exits or its output cannot be read; which, in words."""
        assert self._proc is not None
        exited = asyncio.ensure_future(self._proc.wait())
        unreadable = asyncio.ensure_future(self._unreadable.wait())
        try:
            await asyncio.wait({exited, unreadable}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            unreadable.cancel()
        if self.output_error is not None:
            return f"output could not be read ({self.output_error!r})"
        return f"exited with code {self._proc.returncode}"

    async def wait_ready(self, timeout: float) -> float:
        """Probe every 50 ms until ready; returns the seconds it took. A forked replica whose
        worker reported itself ready (template.py: a spare taken, or a fork that started) is
        serving already: unless the manifest asks for an httpGet readiness probe, it is ready
        now, without a TCP probe."""
        started = time.monotonic()
        proc = self._proc
        forked = isinstance(proc, ForkedProcess) and proc.listening and proc.returncode is None
        if forked and self.spec.readiness_path is None:
            self.ready = True
            return 0.0
        while time.monotonic() - started < timeout:
            if self._proc is None or self._proc.returncode is not None:
                raise ReplicaError(f"{self.spec.name} exited before it was ready")
            if self.output_error is not None:
                raise ReplicaError(
                    f"{self.spec.name} output could not be read ({self.output_error!r})"
                )
            if await self._probe():
                self.ready = True
                return time.monotonic() - started
            await asyncio.sleep(PROBE_INTERVAL)
        raise ReplicaError(f"{self.spec.name} was not ready within {timeout:.0f}s")

    async def _probe(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 0.1
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
        if self._records is not None:
            self._records.remove(proc.pid)
        # 3. Drain the last output lines (bounded: a process that left the group may still
        #    hold the pipe open).
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), DRAIN_TIMEOUT)
            self._pump.cancel()


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
