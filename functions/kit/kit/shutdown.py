"""Close pools and clients cleanly when the process is told to stop (factor 9).

Resources register a close function when they open. They are closed, newest first, on
whichever comes first:

1. SIGTERM, through a handler that closes everything and then chains to the handler that was
   installed before it (the server's own graceful shutdown still runs; with the default
   disposition the process still dies of the signal, as the platform expects);
2. normal interpreter exit (`atexit`). This is the path under gunicorn, which installs its own
   SIGTERM handler in each worker after the application is loaded, drains in-flight requests,
   then exits the worker normally. Closing after the drain is what we want there anyway.

Closing is idempotent and every close error is logged, never raised: one failing client must
not keep the others open.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from kit.logging import get_logger

Closer = Callable[[], None]
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_lock = threading.RLock()
_resources: list[tuple[str, Closer]] = []
_previous: dict[int, _Handler] = {}
_atexit_registered = False
log = get_logger(__name__)


def register(name: str, close: Closer) -> None:
    """Close `close` at shutdown. Installs the SIGTERM handler when called on the main thread."""
    global _atexit_registered
    with _lock:
        _resources.append((name, close))
        if not _atexit_registered:
            atexit.register(close_all)
            _atexit_registered = True
    install()


def unregister(close: Closer) -> None:
    """Forget a resource that was closed by its owner already."""
    with _lock:
        _resources[:] = [(n, c) for n, c in _resources if c != close]


def registered() -> list[str]:
    """Names of the resources still open, oldest first."""
    with _lock:
        return [name for name, _ in _resources]


def close_all() -> list[tuple[str, BaseException]]:
    """Close every registered resource, newest first; return (name, error) for failures."""
    with _lock:
        pending = list(reversed(_resources))
        _resources.clear()
    failures: list[tuple[str, BaseException]] = []
    for name, close in pending:
        try:
            close()
        except Exception as error:
            failures.append((name, error))
            log.error("resource close failed", resource=name, error=repr(error))
        else:
            log.info("resource closed", resource=name)
    return failures


def install(signum: int = signal.SIGTERM) -> bool:
    """Install the closing handler for `signum`, chaining to the current one.

    Python only allows this on the main thread; elsewhere it returns False and the `atexit`
    path does the closing. Installing twice is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        current = signal.getsignal(signum)
        if current is _on_signal:
            return True
        _previous[signum] = current
        signal.signal(signum, _on_signal)
    return True


def uninstall(signum: int = signal.SIGTERM) -> None:
    """Put back the handler that `install` replaced (tests use this)."""
    with _lock:
        if signum in _previous and signal.getsignal(signum) is _on_signal:
            previous = _previous.pop(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    log.info("signal received, closing resources", signal=signal.Signals(signum).name)
    close_all()
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        # The default disposition: restore it and die of the same signal, so the exit status
        # still says "terminated by SIGTERM" to whoever supervises the process.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
