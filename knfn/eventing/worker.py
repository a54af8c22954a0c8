"""Dispatchers in their own processes: the broker's deliveries on cores the gateway does not use.

``knfn dev`` starts :class:`Dispatchers`: one process per slot (``knfn dispatch-worker``, an
internal command), each claiming deliveries from Postgres with its own :class:`Dispatcher` and
one connection pool. Claims are safe across processes (``FOR UPDATE SKIP LOCKED`` and a lease,
knfn/eventing/store.py), so the processes share the queue without talking to each other. The
in-flight bounds (:class:`Limits`) are split between them, so all of them together hold what
one would. Deliveries to Services still go through the gateway's URL.

The parent talks to a process over its stdin, in frames (a 4-byte length, then a pickle): the
manifests (again after every change: the worker builds its EventingConfig from them, as the
parent does), then ``stop`` (claim no more; attempts in flight may end) and ``cut`` (cut them
short: they are released, as in-process). The process answers on stdout with one JSON line as
it exits: how many it released and delivered. Its stderr lines are knfn's log lines.

A process dies with knfn (the parent-death signal, knfn/serving/pdeathsig.py, and end of file on
its stdin); it runs in its own session, so a Ctrl-C in the terminal reaches knfn alone, which
stops it in its turn. One that exits on its own is started again in its slot; what it had
claimed is leased, and due again when the lease runs out (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from knfn.errors import KnfnError
from knfn.eventing.config import EventingConfig
from knfn.eventing.dispatcher import DEFAULT_LIMITS, FLUSH_SECONDS, Limits
from knfn.manifests import Manifests
from knfn.serving import pdeathsig

# The variable that carries the database URL to a worker (kept off its command line).
DATABASE_URL_ENV = "KNFN_DISPATCH_DATABASE_URL"
# A worker that exited on its own is started again after this.
RESTART_SECONDS = 1.0
# After ``cut``, a worker has this long to write its last outcomes and exit; then it is killed.
EXIT_SECONDS = FLUSH_SECONDS + 5.0
HEADER = struct.Struct(">I")


class WorkerError(KnfnError):
    """A dispatcher process could not be started or spoke out of turn."""


def default_processes(cpus: int | None) -> int:
    """Dispatcher processes for a machine with this many cores: one per two cores (the
    gateway and Postgres need the others), at least one, at most four."""
    return max(1, min(4, (cpus or 1) // 2))


def share(limits: Limits, processes: int) -> Limits:
    """One process's part of the in-flight bounds, so that all of them together hold what
    one dispatcher would (rounded up: never zero)."""
    return replace(
        limits,
        total=math.ceil(limits.total / processes),
        per_destination=math.ceil(limits.per_destination / processes),
    )


@dataclass(frozen=True)
class DispatchOptions:
    """How dispatch runs, from the command line: processes, bounds, and the environment the
    processes get (the host's, with the database URL added)."""

    processes: int = 1
    limits: Limits = DEFAULT_LIMITS
    host_env: Mapping[str, str] = field(default_factory=dict)


# -- frames on a worker's stdin -----------------------------------------------------------------
def frame(message: tuple[str, Any]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[str, Any] | None:
    """The next message, or None at end of file (the parent is gone)."""
    try:
        header = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        message: tuple[str, Any] = pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None
    return message


# -- the parent's side --------------------------------------------------------------------------
class Dispatchers:
    """The dispatcher processes of one ``knfn dev``: started, kept running, stopped in order."""

    def __init__(
        self,
        database_url: str,
        gateway: str,
        options: DispatchOptions,
        report: Callable[[str], None],
    ) -> None:
        self._options = options
        self._report = report
        self._limits = share(options.limits, options.processes)
        self._env = {**options.host_env, DATABASE_URL_ENV: database_url}
        self._gateway = gateway
        self._manifests: Manifests | None = None
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._results: dict[int, dict[str, int]] = {}
        self._slots: list[asyncio.Task[None]] = []
        self._stopping = False
        self._cut = False

    def argv(self, slot: int) -> list[str]:
        limits = self._limits
        return [
            sys.executable, "-m", "knfn", "dispatch-worker", "--slot", str(slot),
            "--gateway", self._gateway, "--total", str(limits.total),
            "--per-destination", str(limits.per_destination), "--batch", str(limits.batch),
        ]  # fmt: skip

    def start(self, manifests: Manifests) -> None:
        self._manifests = manifests
        for slot in range(1, self._options.processes + 1):
            self._slots.append(asyncio.create_task(self._keep(slot)))

    def apply(self, manifests: Manifests) -> None:
        """New manifests: every worker builds its EventingConfig from them."""
        self._manifests = manifests
        for proc in self._procs.values():
            self._send(proc, ("config", manifests))

    async def _keep(self, slot: int) -> None:
        """Run the slot's worker; start it again whenever it exits before the stop."""
        while not self._stopping:
            try:
                proc = await self._spawn(slot)
            except OSError as exc:
                self._report(f"dispatcher {slot} could not start: {exc}")
                await asyncio.sleep(RESTART_SECONDS)
                continue
            # Its output to the end (the result line comes last), then its exit code.
            await self._read(slot, proc)
            code = await proc.wait()
            self._procs.pop(slot, None)
            if not self._stopping:
                self._report(f"dispatcher {slot} exited ({code}); starting it again")
                await asyncio.sleep(RESTART_SECONDS)

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        # From the event loop's thread, which lives as long as knfn (see pdeathsig.py).
        proc = await asyncio.create_subprocess_exec(
            *pdeathsig.default_wrapper(os.getpid()),
            *self.argv(slot),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        self._procs[slot] = proc
        self._send(proc, ("config", self._manifests))
        if self._stopping:
            self._send(proc, ("stop", None))
        if self._cut:
            self._send(proc, ("cut", None))
        return proc

    async def _read(self, slot: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None

        async def results(stream: asyncio.StreamReader) -> None:
            async for line in stream:
                with contextlib.suppress(ValueError):
                    self._results[slot] = {k: int(v) for k, v in json.loads(line).items()}

        async def log(stream: asyncio.StreamReader) -> None:
            async for line in stream:
                self._report(f"dispatcher {slot}: {line.decode(errors='replace').rstrip()}")

        await asyncio.gather(results(proc.stdout), log(proc.stderr))

    def _send(self, proc: asyncio.subprocess.Process, message: tuple[str, Any]) -> None:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(frame(message))

    async def stop(self, grace: float, force: asyncio.Event | None = None) -> int:
        """Claim no more; let attempts in flight end within grace seconds (or until force),
        then cut the rest short (released). Returns how many were released in all."""
        self._stopping = True
        for proc in self._procs.values():
            self._send(proc, ("stop", None))
        exited = asyncio.gather(*self._slots, return_exceptions=True)
        waits: list[asyncio.Future[Any]] = [exited]
        if force is not None:
            waits.append(asyncio.ensure_future(force.wait()))
        await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        for w in waits[1:]:
            w.cancel()
        self.cut()
        done, _ = await asyncio.wait([exited], timeout=EXIT_SECONDS)
        if not done:
            for slot, proc in self._procs.items():
                self._report(f"dispatcher {slot} did not exit after being cut short: killed")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await exited
        return sum(r.get("released", 0) for r in self._results.values())

    def cut(self) -> None:
        """Cut the attempts in flight short now (the workers release them)."""
        self._cut = True
        for proc in self._procs.values():
            self._send(proc, ("cut", None))


# -- the worker's side ------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerOptions:
    """A worker's command line (``knfn dispatch-worker``) and its database URL."""

    slot: int
    gateway: str
    database_url: str
    limits: Limits


class _Config:
    """The worker's current EventingConfig, built from each manifests frame."""

    def __init__(self) -> None:
        self.current: EventingConfig | None = None

    def __call__(self) -> EventingConfig:
        if self.current is None:  # claims start only once the first frame is in
            raise WorkerError("no manifests received yet")
        return self.current


def main(options: WorkerOptions) -> None:
    """Run one dispatcher until the parent says stop (and cut), or goes away."""
    import uvloop

    # A Ctrl-C is knfn's to handle (this process has its own session; this is for a direct run).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_serve(options))


async def _serve(options: WorkerOptions) -> None:
    import aiohttp

    from knfn.eventing import config as eventing_config
    from knfn.eventing.dispatcher import Dispatcher, new_pool
    from knfn.eventing.sending import Gatewayed
    from knfn.eventing.store import EventStore

    loop = asyncio.get_running_loop()
    stop, cut, configured = asyncio.Event(), asyncio.Event(), asyncio.Event()
    # SIGTERM from outside knfn: stop as knfn would; a second one cuts short.
    loop.add_signal_handler(signal.SIGTERM, lambda: (cut if stop.is_set() else stop).set())
    config = _Config()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)

    async def control() -> None:
        while (message := await read_frame(reader)) is not None:
            kind, body = message
            if kind == "config":
                try:
                    config.current = eventing_config.load(body)
                except KnfnError as exc:  # the parent loaded the same: not expected
                    print(f"manifests not applied: {exc}", file=sys.stderr, flush=True)
                configured.set()
            elif kind == "stop":
                stop.set()
            elif kind == "cut":
                cut.set()
        # The parent is gone: stop now, releasing what is in flight.
        stop.set()
        cut.set()

    controller = asyncio.create_task(control())
    dispatcher: Dispatcher | None = None
    try:
        await asyncio.wait(
            [asyncio.ensure_future(configured.wait()), asyncio.ensure_future(stop.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not stop.is_set():
            async with (
                new_pool(options.database_url) as pool,
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
                ) as session,
            ):
                dispatcher = Dispatcher(
                    options.database_url,
                    EventStore(options.database_url),
                    config,
                    Gatewayed(session, options.gateway),
                    limits=options.limits,
                    pool=pool,
                )
                await dispatcher.run(stop, cut)
    finally:
        controller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await controller
        released = dispatcher.released if dispatcher else 0
        delivered = dispatcher.delivered if dispatcher else 0
        print(json.dumps({"released": released, "delivered": delivered}), flush=True)
