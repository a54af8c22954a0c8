"""Detached server processes: start in their own session, probe until ready, stop as a group.

Backing servers outlive the command that started them (`knfn services up` returns), so they are
started with ``start_new_session`` and tracked by pid in the state file, never as children.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from knfn.errors import BackingError


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv detached (own session), stdout and stderr appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **as_user(user),
        )


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to user with its own group and no others (none for None)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def is_running(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def cmdline(pid: int) -> list[str]:
    """The argv of a running process ([] when gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def cwd(pid: int) -> Path | None:
    """The working directory of a running process (None when gone or unreadable)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def listens(pid: int, port: int) -> bool:
    """True when the process pid holds the TCP socket listening on 127.0.0.1:port.

    A port that answers proves nothing about who answers; the socket's inode in the process's
    open files does (/proc/net/tcp names the listener's inode).
    """
    wanted = f"0100007F:{port:04X}"
    inodes: set[str] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        # local_address, state 0A (LISTEN), inode
        if len(fields) > 9 and fields[1] == wanted and fields[3] == "0A":
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def log_since(path: Path, offset: int) -> str:
    """What a server's log got after byte offset ("" when it cannot be read)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def wait_ready(
    name: str,
    probe: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes] | None,
    log_path: Path,
    timeout: float,
    interval: float = 0.05,
) -> None:
    """Poll probe until it returns True; fail with the log's tail on exit or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        if proc is not None and proc.poll() is not None:
            raise BackingError(
                f"{name} exited with code {proc.returncode} before it was ready; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise BackingError(
                f"{name} was not ready within {timeout:.0f}s; last lines of {log_path}:\n"
                f"{tail(log_path)}"
            )
        time.sleep(interval)


def stop(pid: int, *, first: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop a detached server: signal its process group, wait, then SIGKILL the group."""
    if not is_running(pid):
        return
    # 1. Ask politely; the server was started as a session leader, so its group is its pid.
    _signal_group(pid, first)
    # 2. Wait for the group leader to go.
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_running(pid):
            break
        time.sleep(0.05)
    # 3. Whatever is left of the group (children included) is killed.
    _signal_group(pid, signal.SIGKILL)
    _reap(pid)


def kill_group(pid: int) -> None:
    """SIGKILL what is left of a dead server's process group (its orphaned workers), and reap.

    The group only: the pid alone may already belong to some unrelated process.
    """
    _reap(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status when the server happens to be our child."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
