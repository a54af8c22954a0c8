"""knfn's side of a fork server's control channel: a revision's template (template.py) or the
root template (template_root.py).

Both servers answer a request with the child's pid (or why not), report each child they reap,
and take their children with them when they die (parent-death signal). The client matches
replies to the requests waiting for them, hands each exit to its child's ``ForkedProcess`` (an
exit that comes before the reply's child is known is kept for it), kills a child whose request
gave up waiting, and copies the server's own output to the printer; start_server and
stop_server start and stop either server's process. What a request is, and when to make one,
is its owner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from knfn.logs import Printer
from knfn.serving.control_wire import MAX_MESSAGE

if TYPE_CHECKING:
    from knfn.serving.template import ForkedProcess


class Started(Protocol):
    """A reply: the child of request id was forked, as pid (Forked, Spawned)."""

    @property
    def id(self) -> int: ...
    @property
    def pid(self) -> int: ...


class Refused(Protocol):
    """A reply: request id was not forked, and why (ForkFailed, SpawnFailed)."""

    @property
    def id(self) -> int: ...
    @property
    def reason(self) -> str: ...


class Reaped(Protocol):
    """A child was reaped (Exited); returncode as asyncio reports it."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int: ...


M = TypeVar("M")


class ForkServerClient(Generic[M]):
    """The requests waiting for a fork server's replies, and the children it forked."""

    def __init__(
        self,
        name: str,
        printer: Printer,
        decode: Callable[[bytes], M],
        *,
        errors: tuple[type[Exception], ...],
        gone: Callable[[str], Exception],
        replies: tuple[type[Started], type[Refused], type[Reaped]],
    ) -> None:
        """name: the server's, in messages and as its output's; decode and errors: its wire's
        (errors: what decode raises); gone: the error a request waiting when the server exits
        gets; replies: its wire's message classes for Started, Refused and Reaped."""
        self.name, self._printer, self._decode = name, printer, decode
        self._channel_errors: tuple[type[Exception], ...] = (OSError, *errors)
        self._gone = gone
        self._started, self._refused, self._reaped = replies
        self.ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[M]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}

    async def first(self, control: socket.socket, pid: int, timeout: float) -> M | None:
        """The server's first message (None: it exited first); gone when it sends none within
        timeout (its group killed)."""
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(control, MAX_MESSAGE), timeout)
        except TimeoutError:
            killpg(pid)
            raise self._gone(f"not ready within {timeout:.0f}s") from None
        return self._decode(data) if data else None

    async def read(self, control: socket.socket) -> None:
        """Its messages until the channel closes; then the server is gone, and with it its
        children (parent-death signal): their groups are killed here too, so that what they
        started goes as well, now."""
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(control, MAX_MESSAGE):
                self._dispatch(self._decode(data))
        except self._channel_errors as exc:
            self._printer.line("knfn", f"{self.name}: control channel: {exc}")
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self._gone(f"{self.name} exited"))
            for child in self._children.values():
                killpg(child.pid)
                child.exited(-signal.SIGKILL)
            self._children.clear()

    def _dispatch(self, message: M) -> None:
        if isinstance(message, self._started | self._refused):
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
            elif isinstance(message, self._started):  # its request gave up waiting: unwanted
                killpg(message.pid)
        elif isinstance(message, self._reaped):
            child = self._children.pop(message.pid, None)
            if child is None:
                self._early_exits[message.pid] = message.returncode
            else:
                child.exited(message.returncode)

    async def ask(
        self, control: socket.socket, request: int, data: bytes, fds: list[int], timeout: float
    ) -> M:
        """The reply to request (its id), sent as data with fds attached; raises OSError,
        TimeoutError or gone when none comes."""
        self._pending[request] = reply = asyncio.get_running_loop().create_future()
        try:
            await send_fds(control, data, fds)
            return await asyncio.wait_for(reply, timeout)
        finally:
            self._pending.pop(request, None)

    def adopt(self, process: ForkedProcess, alive: bool) -> None:
        """process, forked by the server, gets its exit reported (as it is, if reaped already);
        when the server is no longer alive (it has gone, or is going), it is dead already."""
        if process.pid in self._early_exits:
            process.exited(self._early_exits.pop(process.pid))
        elif alive:
            self._children[process.pid] = process
        else:
            process.exited(-signal.SIGKILL)

    async def copy_output(self, stdout: asyncio.StreamReader) -> None:
        """The server's own output, line by line, to the printer under its name."""
        while True:
            try:
                raw = await stdout.readline()
            except ValueError:  # a line over the reader's limit: the part read so far is gone
                continue
            if not raw:
                return
            self._printer.line(self.name, raw.decode("utf-8", "replace").rstrip("\n"))


async def start_server(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, *, root: bool = False
) -> tuple[asyncio.subprocess.Process, socket.socket]:
    """``python -P -m knfn.serving.template_main [--root] CONTROL_FD PARENT_PID *args``: a
    template (root: the root template) in its own session, its output piped; with knfn's end
    of its control socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "knfn.serving.template_main", *(["--root"] if root else []),
            str(theirs.fileno()), str(os.getpid()), *args,
            cwd=cwd, env=env, pass_fds=(theirs.fileno(),),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


class ServerProcess(Protocol):
    """What stop_server uses of a fork server's process (an asyncio subprocess has it)."""

    @property
    def pid(self) -> int: ...
    async def wait(self) -> int: ...


async def stop_server(
    control: socket.socket | None, process: ServerProcess | None, timeout: float
) -> None:
    """1. Close the channel (the server exits; children left die with it), 2. wait up to
    timeout, 3. SIGKILL its group."""
    if control is not None:
        with contextlib.suppress(OSError):
            control.shutdown(socket.SHUT_WR)
    if process is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout)
        killpg(process.pid)
        await process.wait()


async def send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """data with fds attached, on a non-blocking socket (waiting while it is full)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(sock, [data], fds)
            return
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(sock, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(sock)


async def pipe_reader(fd: int) -> asyncio.StreamReader:
    """A reader of the pipe's read end fd (a forked child's output), which it then owns."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**16)
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


def killpg(pid: int) -> None:
    """SIGKILL to the group pid leads, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
