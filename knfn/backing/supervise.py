"""Keep the embedded backing services up while ``knfn dev`` runs: look, and restart the dead.

Every second or so each embedded server is looked at (its pid alive and ours, and answering).
A dead one is started again on the same port, since the URLs handed to the functions and to the
broker name it; a live one that stops answering for several looks in a row is stopped and
started again. A restart that fails is tried again with exponential backoff. Clients recover by
themselves: the broker's store and the functions' pools open a new connection on their next use.

The decisions are a pure state machine (:class:`Watch`, tested with a fake clock); the blocking
look and restart run in an executor, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from knfn.backing import services
from knfn.backing.services import BackingConfig, Health
from knfn.errors import KnfnError

Report = Callable[[str], None]


class Action(enum.Enum):
    NONE = "none"
    WAIT = "wait"  # down, but the backoff delay has not passed yet
    RESTART = "restart"


@dataclass
class Watch:
    """What the supervisor knows about one server between looks."""

    # Looks in a row without an answer before a live server is taken for hung (each look
    # waits up to a few seconds, so this is tens of seconds: load alone must not trigger it).
    unanswered_limit: int = 10
    first_delay: float = 0.5
    max_delay: float = 15.0
    misses: int = 0
    failures: int = 0
    not_before: float = 0.0
    down_since: float | None = None

    def observe(self, health: Health, now: float) -> Action:
        """The action for what one look found."""
        if health is Health.UP:
            self.misses = 0
            if self.down_since is None:
                return Action.NONE
        if health is Health.UNANSWERING:
            self.misses += 1
            if self.misses < self.unanswered_limit:
                return Action.NONE
        if self.down_since is None:
            self.down_since = now
        if health is Health.UP:
            # It came back without us (or with our last attempt): nothing left to do.
            self.recovered()
            return Action.NONE
        return Action.WAIT if now < self.not_before else Action.RESTART

    def failed(self, now: float) -> float:
        """A restart failed: the delay before the next one (doubling, capped)."""
        self.failures += 1
        delay: float = min(self.max_delay, self.first_delay * 2.0 ** (self.failures - 1))
        self.not_before = now + delay
        return delay

    def recovered(self) -> None:
        self.misses = self.failures = 0
        self.not_before = 0.0
        self.down_since = None


async def supervise(
    cfg: BackingConfig,
    report: Report,
    stop: asyncio.Event,
    *,
    interval: float = 1.0,
) -> None:
    """Until stop is set: look at each embedded server, restart the dead (logged via report)."""
    loop = asyncio.get_running_loop()
    watches = {name: Watch() for name in services.embedded(cfg)}
    while watches and not stop.is_set():
        for name, watch in watches.items():
            if stop.is_set():
                return
            health = await loop.run_in_executor(None, services.check, cfg, name)
            now = time.monotonic()
            first_look = watch.down_since is None
            action = watch.observe(health, now)
            if action is Action.NONE or stop.is_set():
                continue
            if first_look:
                what = "died" if health is Health.DEAD else "stopped answering"
                report(f"{name} {what}; restarting it")
            if action is Action.WAIT:
                continue
            began = time.monotonic()
            try:
                pid = await loop.run_in_executor(None, services.restart, cfg, name)
            except (KnfnError, OSError) as exc:
                delay = watch.failed(time.monotonic())
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                report(f"{name} restart failed ({first_line}); next try in {delay:.1f}s")
                continue
            down_for = (time.monotonic() - (watch.down_since or began)) * 1000
            watch.recovered()
            report(f"{name} restarted in {down_for:.0f} ms (pid {pid})")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
