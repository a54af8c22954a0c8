"""The root template: one process that forks every revision's template (Linux).

Each revision's template (template.py) imports functions-framework, Flask, gunicorn and the
function's libraries before its function: eight templates started at once spend most of a
start's CPU on the same imports. The root (knfn/serving/template_root_main.py) does them once,
as soon as ``knfn dev`` starts, and a template is a fork of it that sets its revision's
environment and directory and imports only its function. The templates share the root's pages
copy-on-write too.

The root is started by knfn, dies with it (parent-death signal), and is started again when it
dies (its templates die with it: each is then replaced as a dead template is). A template is
started on its own (spawned, as without a root) whenever the root cannot give one: not started
yet is waited for, but failed, restarting, or a revision whose environment differs in a
variable the root's imports depended on (template_root_wire.conflicts).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from knfn.logs import Printer
from knfn.serving import template_root_wire as wire
from knfn.serving.fork_client import (
    ForkServerClient,
    killpg,
    pipe_reader,
    start_server,
    stop_server,
)
from knfn.serving.replica_env import PASSTHROUGH
from knfn.serving.template import ForkedProcess, TemplateError

NAME = "template-root"
START_TIMEOUT = 60.0
SPAWN_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
RESTART_BACKOFF_MAX = 30.0


def root_env(host_env: Mapping[str, str]) -> dict[str, str]:
    """What every replica's environment has in common (replica_env.resolve's base)."""
    return {**{k: host_env[k] for k in PASSTHROUGH if k in host_env}, "PYTHONUNBUFFERED": "1"}


def requirement_files(functions_dir: Path) -> list[Path]:
    """The functions' requirements files, whose libraries the root imports."""
    return sorted(functions_dir.glob("*/requirements.txt"))


class TemplateRoot:
    """The root template process: started, replaced when it dies, asked for templates."""

    def __init__(
        self, env: Mapping[str, str], requirements: Sequence[Path], cwd: Path, printer: Printer
    ) -> None:
        """cwd: a directory of the root's own (template_root_main.move_cwd)."""
        self.env, self._requirements, self._printer = dict(env), requirements, printer
        self._cwd = cwd
        self.state = "starting"  # starting, ready, down (restarting), failed, stopped
        self._started: dict[str, str] = {}  # its environment, and what its imports read
        self._reads: dict[str, str | None] = {}
        self._settled = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._client = ForkServerClient(
            NAME,
            printer,
            wire.decode,
            errors=(wire.RootWireError,),
            gone=RootError,
            replies=(wire.Spawned, wire.SpawnFailed, wire.Exited),
        )
        self._said: set[tuple[str, ...]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._supervise()))

    async def _supervise(self) -> None:
        backoff = 0.5
        while self.state != "stopped":
            self.state = "starting"
            self._settled.clear()
            try:
                reader = await self._launch()
            except (OSError, wire.RootWireError, RootError) as exc:
                self.state = "failed"
                self._printer.line("knfn", f"{NAME}: {exc}; templates start on their own")
                self._settled.set()
                return
            self.state = "ready"
            self._settled.set()
            await reader  # until the channel closes: the root exited
            assert self._proc is not None
            code = await self._proc.wait()
            if self.state == "stopped":
                return
            self.state = "down"
            self._printer.line("knfn", f"{NAME} exited with code {code}; a new one follows")
            await asyncio.sleep(backoff)
            backoff = min(RESTART_BACKOFF_MAX, backoff * 2)

    async def _launch(self) -> asyncio.Task[None]:
        """Start the root and wait for its Preloaded; the task reading its messages."""
        self._cwd.mkdir(parents=True, exist_ok=True)
        requirements = [str(path) for path in self._requirements]
        proc, ours = await start_server(requirements, self.env, self._cwd, root=True)
        self._proc = proc
        self._control = ours
        assert proc.stdout is not None
        self._tasks.append(asyncio.create_task(self._client.copy_output(proc.stdout)))
        message = await self._client.first(ours, proc.pid, START_TIMEOUT)
        if not isinstance(message, wire.Preloaded):
            killpg(proc.pid)
            reason = message.reason if isinstance(message, wire.Failed) else "exited"
            raise RootError(f"cannot fork templates ({reason}, code {await proc.wait()})")
        self._started, self._reads = dict(message.started), dict(message.read)
        return asyncio.create_task(self._read(ours))

    async def _read(self, control: socket.socket) -> None:
        try:
            await self._client.read(control)  # the root is gone, and with it its templates
        finally:
            self._control = None
            control.close()

    async def spawn(
        self, name: str, script: str, cwd: Path, env: Mapping[str, str]
    ) -> tuple[ForkedProcess, socket.socket] | None:
        """A template forked from the root: its process and knfn's end of its control socket;
        None when the root cannot give one (the caller spawns it)."""
        if self.state == "starting":
            await self._settled.wait()
        control = self._control
        if self.state != "ready" or control is None:
            return None
        plan = wire.plan(self.env, self._started, self._reads, env)
        if plan.conflicts:
            if tuple(plan.conflicts) not in self._said:
                self._said.add(tuple(plan.conflicts))
                self._printer.line(
                    "knfn",
                    f"{name}: env differs from {NAME}'s in {plan.conflicts}; started on its own",
                )
            return None
        request = wire.Spawn(next(self._client.ids), script, str(cwd), plan.env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        out_r, out_w = os.pipe()
        try:
            answer = await self._client.ask(
                control, request.id, wire.encode(request), [theirs.fileno(), out_w], SPAWN_TIMEOUT
            )
        except (OSError, TimeoutError, RootError, wire.RootWireError) as exc:
            answer = wire.SpawnFailed(request.id, repr(exc))
        finally:
            theirs.close()
            os.close(out_w)
        if not isinstance(answer, wire.Spawned):
            ours.close()
            os.close(out_r)
            reason = answer.reason if isinstance(answer, wire.SpawnFailed) else repr(answer)
            self._printer.line("knfn", f"{name}: {NAME} could not fork it ({reason})")
            return None
        # A template serves no port of its own.
        process = ForkedProcess(answer.pid, await pipe_reader(out_r), port=0)
        self._client.adopt(process, alive=self.state == "ready")
        return process, ours

    async def stop(self) -> None:
        """1. Close the channel (the root exits; templates left die with it), 2. wait,
        3. SIGKILL. The templates are stopped by their owners first."""
        self.state = "stopped"
        self._settled.set()
        await stop_server(self._control, self._proc, STOP_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class RootError(TemplateError):
    """The root template cannot fork templates."""
