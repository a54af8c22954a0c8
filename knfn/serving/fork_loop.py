"""The loop of a fork server: a revision's template (template_main.py) or the root template
(template_root_main.py).

Both wait on their control socket for knfn's requests (one datagram each, file descriptors
attached), fork a child per request, and report every child they reap. SIGCHLD wakes the loop
through a pipe (``signal.set_wakeup_fd``), so one ``select`` waits for both; what a request
means, and the messages that answer it, are the caller's (its wire module's).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from typing import TypeVar

from knfn.serving.control_wire import MAX_MESSAGE

MAX_FDS = 2  # a request's file descriptors: a template's or replica's output, and one more

Child = TypeVar("Child")
# A reaped child's pid and exit code (as asyncio reports it: -N for signal N) -> its message.
Exited = Callable[[int, int], bytes]


def serve(
    control: socket.socket,
    answer: Callable[[bytes, list[int]], Child | None],
    exited: Exited,
) -> Child:
    """Answer requests (answer(data, fds): None in the server, what the child is to be in a
    forked child) and report reaped children until knfn closes the channel (then exit);
    returns only in a forked child, with SIGCHLD as it was before."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wakeup fd does the work
    with selectors.DefaultSelector() as selector, contextlib.ExitStack() as closing:
        closing.callback(os.close, wake_r)
        closing.callback(os.close, wake_w)
        selector.register(control, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == wake_r:
                    os.read(wake_r, 4096)
                    reap(control, exited)
                    continue
                data, fds, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, MAX_FDS)
                if not data:
                    sys.exit(0)
                child = answer(data, fds)
                if child is not None:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    return child


def fork(fds: list[int]) -> int:
    """os.fork, output flushed first (else the child writes it again); in the server the fds
    sent for the child are closed. The child's pid, or 0 in the child."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        for fd in fds:
            os.close(fd)
    return pid


def refuse(control: socket.socket, fds: list[int], reply: bytes) -> None:
    """A request not understood: its fds closed, reply sent."""
    for fd in fds:
        os.close(fd)
    control.send(reply)


def reap(control: socket.socket, exited: Exited) -> None:
    """Every child that has exited, reaped and reported."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(exited(pid, os.waitstatus_to_exitcode(status)))
