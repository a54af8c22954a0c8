"""Commands that the kernel kills when their parent dies: the prefix :func:`wrapper` returns.

A replica must not outlive knfn, even when knfn is killed with SIGKILL and runs no cleanup.
Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) does that, and it survives ``execve``.
It is set by a tiny program that then execs the command, rather than in a ``preexec_fn``: code
run between fork and exec in knfn, which has threads, can deadlock. The signal fires when the
*thread* that forked exits, so knfn starts replicas from its event loop thread, which lives as
long as knfn.

The program is util-linux's ``setpriv --pdeathsig KILL`` when installed (C, about 3 ms), else
this file run as a script: ``python -I -S pdeathsig.py PARENT_PID CMD...`` (stdlib only, about
30 ms, most of it importing ctypes), which also closes the window between fork and prctl by
checking that its parent is still the one it was given. With setpriv, a replica whose knfn dies
in that window of a few milliseconds is left to the records (knfn/serving/replica_records.py).
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def wrapper(parent: int, setpriv: str | None = None) -> tuple[str, ...]:
    """The argv prefix that runs a command with the parent-death signal armed for parent."""
    if setpriv:
        return (setpriv, "--pdeathsig", "KILL", "--")
    return (sys.executable, "-I", "-S", os.path.abspath(__file__), str(parent))


def default_wrapper(parent: int) -> tuple[str, ...]:
    """setpriv if it is on PATH, else this file."""
    return wrapper(parent, _setpriv())


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv") if sys.platform.startswith("linux") else None


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(f"usage: {argv[0]} PARENT_PID COMMAND [ARG...]")
    parent, command = int(argv[1]), argv[2:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            sys.exit(f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        # The parent may have died before the signal was armed; then it never comes.
        if os.getppid() != parent:
            sys.exit(f"parent {parent} is gone; not starting {command[0]}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
