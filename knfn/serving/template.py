"""A revision's template: one process that has imported the function, forked into replicas.

A spawned replica spends ~250 ms importing functions-framework and the function before it can
answer; a fork of a process that already did answers in milliseconds and shares its memory
copy-on-write (as SOCK's zygotes and Lambda SnapStart do). The template
(knfn/serving/template_main.py) runs with the revision's replica environment minus PORT, in the
function's directory, and lives as long as its revision can receive traffic, scaled to zero
included: that is what makes a cold start cheap. It is replaced when it dies.

A forked replica looks to the supervisor like a spawned one (``ReplicaProcess``): its pid leads
its own process group (so the group stop reaches gunicorn's worker), its output comes through a
pipe knfn made, and its exit, reaped by the template, is reported over the control channel.

Each ready template keeps one spare, as Fission keeps a warm pool: a child forked ahead of need
that is already a whole server, its own port bound (picked by knfn, as for any replica), PORT
and the rest of the replica environment set, gunicorn's arbiter and worker started. It is not
a replica yet: no endpoint, not in /status, no traffic. A replica wanted takes it, and it is
ready at once (knfn only registers its endpoint); a new spare is forked behind it. Its memory
is that of an idle replica (an arbiter and a worker sharing the template's pages, measured as a
replica's PSS: budget.py), kept per revision as long as its template lives; it is recorded in
the state dir like a replica (replica_records.py), and dies with its template.

Replicas are spawned instead when forking is unsafe or impossible: not Linux, a template that
failed to start or import (or started threads at import), or a revision annotated
``knfn.dev/replica-start: spawn`` in ``spec.template.metadata.annotations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from knfn.errors import KnfnError
from knfn.logs import Printer
from knfn.ports import free_port
from knfn.serving import template_wire as wire
from knfn.serving.fork_client import (
    ForkServerClient,
    killpg,
    pipe_reader,
    start_server,
    stop_server,
)
from knfn.serving.replica_records import ReplicaRecords

if TYPE_CHECKING:
    from knfn.serving.template_root import TemplateRoot

ANNOTATION = "knfn.dev/replica-start"
MODES = ("fork", "spawn")
START_TIMEOUT = 60.0  # import and app build, as a replica's readiness timeout
FORK_TIMEOUT = 5.0  # from request to the child's pid
LISTEN_TIMEOUT = 5.0  # from fork to the worker serving; then knfn probes as usual
SPARE_BACKOFF_MAX = 30.0  # between spares that die unused (a server that cannot start)
STOP_TIMEOUT = 5.0
RESTART_BACKOFF_MAX = 30.0


class TemplateError(KnfnError):
    """A template that cannot fork replicas."""


class ReplicaProcess(Protocol):
    """What the supervisor uses of a replica's process (asyncio's Process has it too)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    async def wait(self) -> int: ...


def supported() -> bool:
    return sys.platform.startswith("linux")


def start_mode(annotations: Mapping[str, str]) -> str:
    """How a revision's replicas start: ``fork`` (the default) or ``spawn``."""
    return "spawn" if annotations.get(ANNOTATION) == "spawn" else "fork"


def validate_annotations(annotations: Mapping[str, str]) -> list[str]:
    """The problem with a revision template's ``knfn.dev/replica-start``, if any."""
    mode = annotations.get(ANNOTATION, "fork")
    if mode in MODES:
        return []
    return [f"{ANNOTATION}={mode!r}: must be one of {', '.join(MODES)}"]


class ForkedProcess:
    """A replica forked by a template, seen as an asyncio subprocess is."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, port: int) -> None:
        self.pid = pid
        self.stdout = stdout
        self.port = port  # the PORT it serves on (a spare's own, picked when it was forked)
        self.returncode: int | None = None
        # Its worker wrote the ready byte: it accepts on its port, so a TCP probe could only
        # succeed (replica.py skips it).
        self.listening = False
        self.recorded = False  # in the replica records already (a spare is recorded when forked)
        self._exited = asyncio.Event()

    def exited(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


class Spare:
    """A child started ahead of need, and whether its worker serves (the ready byte)."""

    def __init__(self, process: ForkedProcess, ready: asyncio.Task[bool]) -> None:
        self.process, self.ready = process, ready
        self.taken = asyncio.Event()

    async def until_taken_or_gone(self) -> bool:
        """True when it was taken; False when it exited unused."""
        taken = asyncio.ensure_future(self.taken.wait())
        gone = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({taken, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            taken.cancel()
            gone.cancel()
        return self.taken.is_set()


class Template:
    """A revision's template process: started, replaced when it dies, asked for forks."""

    def __init__(
        self,
        name: str,
        script: str,
        cwd: Path,
        env: Mapping[str, str],
        printer: Printer,
        *,
        root: TemplateRoot | None = None,
        pick_port: Callable[[], int] = free_port,
        records: ReplicaRecords | None = None,
    ) -> None:
        self.name, self._script, self._cwd, self._printer = name, script, cwd, printer
        self._pick_port, self._records = pick_port, records
        self.env = wire.template_env(env)
        self._root = root  # forks this template when it can (template_root.py), else spawn
        self.state = "starting"  # starting, ready, down (restarting), failed, stopped
        self._settled = asyncio.Event()
        self._proc: ReplicaProcess | None = None
        self._control: socket.socket | None = None
        self._client = ForkServerClient(
            name,
            printer,
            wire.decode,
            errors=(wire.WireError,),
            gone=TemplateError,
            replies=(wire.Forked, wire.ForkFailed, wire.Exited),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._spare: Spare | None = None
        self._forking: asyncio.Future[Spare | None] | None = None  # the next spare, on its way

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._supervise()))

    async def _supervise(self) -> None:
        backoff = 0.5
        while self.state != "stopped":
            self.state = "starting"
            self._settled.clear()
            try:
                reader = await self._launch()
            except (TemplateError, OSError, wire.WireError) as exc:
                self.state = "failed"
                self._printer.line("knfn", f"{self.name}: {exc}; replicas are spawned")
                self._settled.set()
                return
            self.state = "ready"
            self._settled.set()
            spares = asyncio.create_task(self._keep_spare())
            self._tasks.append(spares)  # stop() cancels it with the rest
            await reader  # until the channel closes: the template exited
            spares.cancel()
            await asyncio.gather(spares, return_exceptions=True)
            self._tasks.remove(spares)
            assert self._proc is not None
            code = await self._proc.wait()
            if self.state == "stopped":
                return
            self.state = "down"
            self._printer.line("knfn", f"{self.name} exited with code {code}; a new one follows")
            await asyncio.sleep(backoff)
            backoff = min(RESTART_BACKOFF_MAX, backoff * 2)

    async def _launch(self) -> asyncio.Task[None]:
        """Start the process (forked by the root, else spawned) and wait for its Ready; the
        task reading its messages."""
        root = self._root
        forked = (
            None if root is None else await root.spawn(self.name, self._script, self._cwd, self.env)
        )
        proc, ours = forked if forked is not None else await self._spawn()
        self._proc, self._control = proc, ours
        assert proc.stdout is not None
        self._tasks.append(asyncio.create_task(self._client.copy_output(proc.stdout)))
        message = await self._client.first(ours, proc.pid, START_TIMEOUT)
        if not isinstance(message, wire.Ready):
            killpg(proc.pid)
            code = await proc.wait()
            if isinstance(message, wire.Failed):
                # Its reason says it all; the exit code would be our own SIGKILL's (-9).
                raise TemplateError(f"cannot fork replicas ({message.reason})")
            raise TemplateError(f"cannot fork replicas (exited, code {code})")
        return asyncio.create_task(self._read(ours))

    async def _spawn(self) -> tuple[ReplicaProcess, socket.socket]:
        """The template started as a process of its own; knfn's end of its control socket."""
        return await start_server([self._script], self.env, self._cwd)

    async def _read(self, control: socket.socket) -> None:
        try:
            await self._client.read(control)
        finally:
            # The template is gone, and with it its replicas (their groups killed: gunicorn's
            # workers go too) and its spare.
            self._drop_spare()
            self._control = None
            control.close()

    async def fork(self, env: Mapping[str, str]) -> ForkedProcess | None:
        """A replica with env, serving: the spare if there is one (then on its own port, in
        ForkedProcess.port), else a child forked now; None when this template cannot give one
        (spawn)."""
        if self.state == "starting":
            await self._settled.wait()
        if self.state != "ready" or self._control is None:
            return None
        delta = wire.env_delta(self.env, env)
        if not delta.keys <= wire.PER_REPLICA:
            stale = sorted(delta.keys - wire.PER_REPLICA)
            self._printer.line("knfn", f"{self.name}: replica env differs in {stale}; spawning")
            return None
        spare = await self._take_spare()
        if spare is not None:
            return spare
        child = await self._fork_child(delta)
        if child is None:
            return None
        process, ready_r = child
        process.listening = await _ready_byte(ready_r, LISTEN_TIMEOUT)
        return process

    async def _take_spare(self) -> ForkedProcess | None:
        """The spare, serving (one on its way is waited for: it is ahead of a new fork);
        None when there is none alive."""
        if self._spare is None and self._forking is not None and not self._forking.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._forking)
        spare, self._spare = self._spare, None
        if spare is None or spare.process.returncode is not None:
            return None
        spare.taken.set()  # a new one is forked behind it (_keep_spare)
        spare.process.listening = await spare.ready
        return spare.process if spare.process.returncode is None else None

    @property
    def spare_pid(self) -> int | None:
        """The spare's pid (its process group: arbiter and worker), to measure its memory."""
        return self._spare.process.pid if self._spare is not None else None

    @property
    def spare_starting(self) -> bool:
        """A spare is being forked or its worker is not serving yet: memory not in use yet."""
        spare, forking = self._spare, self._forking
        return (forking is not None and not forking.done()) or (
            spare is not None and not spare.ready.done()
        )

    async def _keep_spare(self) -> None:
        """One spare while the template is ready: a new one whenever it is taken; after one
        that failed to fork or died unused, the next waits a backoff."""
        backoff = 0.5
        try:
            while self.state == "ready":
                self._forking = asyncio.ensure_future(self._new_spare())
                spare = await asyncio.shield(self._forking)
                if spare is not None:
                    if await spare.until_taken_or_gone():
                        backoff = 0.5
                        continue
                    if self._spare is spare:
                        self._drop_spare()
                await asyncio.sleep(backoff)
                backoff = min(SPARE_BACKOFF_MAX, backoff * 2)
        finally:
            if self._forking is not None:
                self._forking.cancel()
            self._drop_spare()

    async def _new_spare(self) -> Spare | None:
        """Fork the next spare on its own port and make it the spare (take waits for it)."""
        child = await self._fork_child(wire.EnvDelta({"PORT": str(self._pick_port())}), True)
        if child is None:
            return None
        process, ready_r = child
        spare = Spare(process, asyncio.ensure_future(_ready_byte(ready_r, LISTEN_TIMEOUT)))
        if self._records is not None:
            self._records.add(f"{self.name.removesuffix('/template')}/spare", process.pid)
            process.recorded = True
        self._drop_spare()  # none is expected: one at a time
        self._spare = spare
        if self.state != "ready":
            self._drop_spare()
            return None
        return spare

    def _drop_spare(self) -> None:
        """The spare goes unused: its group is killed (it never served), its record removed."""
        spare, self._spare = self._spare, None
        if spare is None:
            return
        spare.ready.cancel()
        killpg(spare.process.pid)
        if self._records is not None:
            self._records.remove(spare.process.pid)

    async def _fork_child(
        self, delta: wire.EnvDelta, quiet: bool = False
    ) -> tuple[ForkedProcess, int] | None:
        """A child forked and starting its server with the template's env and delta; with
        the read end of its ready pipe. None if the template cannot fork one (said, unless
        quiet: then the next replica says it)."""
        control = self._control
        if self.state != "ready" or control is None:
            return None
        request = wire.Fork(next(self._client.ids), delta)
        out_r, out_w = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            answer = await self._client.ask(
                control, request.id, wire.encode(request), [out_w, ready_w], FORK_TIMEOUT
            )
        except (OSError, TimeoutError, TemplateError, wire.WireError) as exc:
            answer = wire.ForkFailed(request.id, repr(exc))
        except BaseException:  # cancelled: a Forked that comes is killed (fork_client)
            os.close(out_r)
            os.close(ready_r)
            raise
        finally:
            for fd in (out_w, ready_w):
                os.close(fd)
        if not isinstance(answer, wire.Forked):
            for fd in (out_r, ready_r):
                os.close(fd)
            reason = answer.reason if isinstance(answer, wire.ForkFailed) else repr(answer)
            if not quiet:
                self._printer.line("knfn", f"{self.name}: fork failed ({reason}); spawning")
            return None
        port = int(delta.set.get("PORT", self.env.get("PORT", "0")))
        process = ForkedProcess(answer.pid, await pipe_reader(out_r), port)
        self._client.adopt(process, alive=self.state == "ready")
        return process, ready_r

    async def stop(self) -> None:
        """1. Close the channel (the template exits; replicas left die with it), 2. wait,
        3. SIGKILL. Its replicas are stopped by their owner first."""
        self.state = "stopped"
        self._settled.set()
        self._drop_spare()
        await stop_server(self._control, self._proc, STOP_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _ready_byte(fd: int, timeout: float) -> bool:
    """Until fd is readable or timeout, then close it; whether the ready byte came (not EOF)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            with contextlib.suppress(OSError):
                ready.set_result(os.read(fd, 1) == b"R")
                return
            ready.set_result(False)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            return await ready
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
