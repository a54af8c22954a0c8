"""Run a command that the kernel kills when its parent dies: ``pdeathsig.py PARENT_PID CMD...``.

A replica must not outlive knfn, even when knfn is killed with SIGKILL and runs no cleanup.
Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) does that, and it survives ``execve``.
It is set here, in a tiny program that then execs the command, rather than in a ``preexec_fn``:
code run between fork and exec in knfn, which has threads, can deadlock. The signal fires when
the *thread* that forked exits, so knfn starts replicas from its event loop thread, which lives
as long as knfn. This file runs as a script with ``python -I -S`` (stdlib only, milliseconds).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
