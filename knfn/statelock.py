"""One knfn per state directory: an advisory lock on ``<state>/knfn.lock`` holding the owner's pid.

``knfn dev`` holds it for its whole life; ``knfn services up/down`` and ``knfn reset`` hold it
while they work. The lock is ``flock`` on an open file, so the kernel drops it when the holder
exits, however it exits (kill -9 included): a stale file never blocks anyone, and the pid in it
is only there to tell the user who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from knfn.errors import KnfnError

LOCK_NAME = "knfn.lock"


class StateDirInUse(KnfnError):
    """Another knfn process holds the state directory."""


class StateLock:
    """A held lock; release() (or the end of the process) lets the next knfn in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, purpose: str) -> StateLock:
        """Take the lock at once or raise StateDirInUse naming the holder's pid and command."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirInUse(
                f"state directory {state_dir} is in use by {holder}; "
                "stop it first (or use another --state-dir)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {purpose}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let go of the lock (idempotent). The file stays: removing it would race a waiter."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """'knfn dev (pid 123)' from the lock file's content, or a plain phrase when unreadable."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, purpose = text.partition(" ")
    if not pid.isdigit():
        return "another knfn process"
    return f"knfn {purpose or 'process'} (pid {pid})"
