"""Factor 9 as the workshop guide runs it: a replica killed from outside under load.

A stopping gunicorn closes its listening socket first and exits once its requests are done, so
for a while the replica refuses connections while knfn still counts it ready. A refused
connection carried nothing to the function, so the gateway takes the replica out of rotation
and sends the request to another replica (or holds it for a new one) instead of answering 502,
as Kubernetes takes a terminating pod out of the endpoints before it stops. What was already
sent to it (on a kept-alive connection the replica then closed) is not sent again: at most one
such request per client. The default project, as a user runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.support import knfn_dev, revisions_of

pytestmark = pytest.mark.slow

CLIENTS = 10
SECONDS = 8.0


async def _load(port: int, stop_at: float) -> Counter[int]:
    """CLIENTS closed-loop clients on hello/?sleep=200 until stop_at; statuses counted."""
    statuses: Counter[int] = Counter()
    url = f"http://127.0.0.1:{port}/?sleep=200"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            while time.monotonic() < stop_at:
                async with session.get(url, headers={"Host": "hello.default"}) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return statuses


def _hello_pids(admin_port: int) -> list[int]:
    return [
        replica["pid"]
        for revision in revisions_of(admin_port, "hello").values()
        for replica in revision["replicas"]
        if replica["ready"] and replica["pid"]
    ]


async def _kill_one_under_load(port: int, admin_port: int, sig: signal.Signals) -> Counter[int]:
    stop_at = time.monotonic() + SECONDS
    load = asyncio.ensure_future(_load(port, stop_at))
    await asyncio.sleep(3.0)  # the KPA has scaled hello out for 10 clients by now
    pids = await asyncio.to_thread(_hello_pids, admin_port)
    assert pids, "hello has no ready replica under load"
    os.kill(pids[0], sig)
    return await load


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_replica_killed_under_load_costs_no_request(tmp_path: Path, sig: signal.Signals) -> None:
    """Either signal: only the requests already sent to that replica may get 502 (at most one
    per client; without the rerouting, every request sent to it until knfn saw it exit did,
    hundreds), and the replica is out of rotation at once."""
    with knfn_dev(tmp_path) as run:
        statuses = asyncio.run(_kill_one_under_load(run.port, run.admin_port, sig))
    print(f"{sig.name}: {dict(statuses)}")
    assert statuses[200] > CLIENTS * 10, statuses
    assert set(statuses) <= {200, 502} and statuses[502] <= CLIENTS, statuses
