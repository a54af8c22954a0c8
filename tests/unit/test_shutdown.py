"""The shutdown owner of `knfn dev`: signals only set events, steps run in order, a forced step
runs its kill variant, and failures are collected without skipping later steps."""

from __future__ import annotations

import asyncio
import io

from knfn.dev import Signals, Teardown
from knfn.logs import Printer


def quiet() -> Printer:
    return Printer(io.StringIO())


def test_first_signal_stops_second_forces() -> None:
    """The first SIGINT/SIGTERM sets stop, the second sets force; nothing else happens."""
    signals = Signals()
    signals.received()
    assert signals.stop.is_set() and not signals.force.is_set()
    signals.received()
    assert signals.force.is_set()


def test_a_failing_step_does_not_skip_the_next_and_is_reported() -> None:
    """Step 1 raises, step 2 still runs; the error names the step."""

    async def scenario() -> tuple[list[str], list[str]]:
        ran: list[str] = []
        teardown = Teardown(quiet(), asyncio.Event(), deadline=30)

        async def broken() -> None:
            ran.append("one")
            raise OSError("port gone")

        async def fine() -> None:
            ran.append("two")

        await teardown.step("1. broken", broken)
        await teardown.step("2. fine", fine)
        teardown.close()
        return ran, teardown.errors

    ran, errors = asyncio.run(scenario())
    assert ran == ["one", "two"]
    assert errors == ["1. broken: OSError: port gone"]


def test_force_runs_the_kill_variant_of_a_step_that_waits() -> None:
    """A step waiting for something slow is cut short by force: its forced variant makes it end
    and later steps are given no time (left() is 0)."""

    async def scenario() -> tuple[list[str], float, list[str]]:
        force = asyncio.Event()
        teardown = Teardown(quiet(), force, deadline=30)
        gone = asyncio.Event()
        calls: list[str] = []

        async def graceful() -> None:
            calls.append("graceful")
            await gone.wait()

        async def kill() -> None:
            calls.append("kill")
            gone.set()

        asyncio.get_running_loop().call_later(0.01, force.set)
        await teardown.step("4. stop replicas", graceful, kill)
        teardown.close()
        return calls, teardown.left(), teardown.errors

    calls, left, errors = asyncio.run(scenario())
    assert calls == ["graceful", "kill"]
    assert left == 0.0 and errors == []


def test_the_deadline_forces() -> None:
    """Past the overall deadline force is set, as by a second signal."""

    async def scenario() -> bool:
        force = asyncio.Event()
        teardown = Teardown(quiet(), force, deadline=0.01)
        await asyncio.wait_for(force.wait(), 5)
        teardown.close()
        return force.is_set()

    assert asyncio.run(scenario())
