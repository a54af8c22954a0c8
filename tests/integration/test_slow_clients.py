"""Slow clients cannot take a real replica's slots: while a hundred connections trickle their
bodies a byte a second, normal requests through the gateway are served, and the tricklers get
408 once the body timeout runs out."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from knfn import server
from knfn.gateway import Gateway
from knfn.routing import Target
from knfn.serving.throttler import Throttler
from tests.support import free_port, running, wait_http

pytestmark = pytest.mark.slow

FUNCTIONS_FRAMEWORK = Path(sys.executable).with_name("functions-framework")
TRICKLERS = 100
PROBES = 40
BODY_TIMEOUT = 3.0


class Rev:
    """A revision as the gateway sees it: one replica at the given containerConcurrency."""

    def __init__(self, url: str, cc: int) -> None:
        self.name = "echo"
        self.labels = ("default", "echo", "echo-00001")
        self.timeout_seconds = 30.0
        self.response_start_timeout_seconds = 30.0
        self.idle_timeout_seconds = 0.0
        self.throttler = Throttler(cc)
        self.throttler.add(url)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real replica: functions-framework serving a function that answers its body's length."""
    src = tmp_path_factory.mktemp("echo")
    (src / "main.py").write_text(
        textwrap.dedent(
            """\
            def echo(request):
                return {"length": len(request.get_data())}
            """
        )
    )
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "FUNCTION_TARGET": "echo",
        "FUNCTION_SIGNATURE_TYPE": "http",
        "PORT": str(port),
    }
    with running([str(FUNCTIONS_FRAMEWORK)], env=env, cwd=src, log=src / "replica.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", timeout=30)
        yield url


async def trickle(port: int, length: int) -> tuple[str, float]:
    """Headers at once, then a byte a second; the status that comes back (or "closed") and
    how long after the headers it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST / HTTP/1.1\r\nHost: echo.default\r\nContent-Length: {length}\r\n\r\n"
    writer.write(head.encode())
    started = time.monotonic()

    async def drip() -> None:
        for _ in range(length):
            await asyncio.sleep(1)
            writer.write(b"x")
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        line = await asyncio.wait_for(reader.readline(), 30)
        outcome = line.split()[1].decode() if line else "closed"
    except (ConnectionError, TimeoutError) as exc:
        outcome = type(exc).__name__
    finally:
        dripping.cancel()
        writer.close()
    return outcome, time.monotonic() - started


async def probe(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.post(url, data=b"p" * 1024, headers={"Host": "echo.default"}) as r:
            if r.status == 200:
                assert (await r.json()) == {"length": 1024}
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


@pytest.mark.parametrize("cc", [1, 4])
def test_trickling_bodies_hold_no_replica_slot(replica: str, cc: int) -> None:
    """≥ 90% of probes 200 while 100 bodies trickle; every trickler 408 (or closed) in time."""

    async def main() -> None:
        rev = Rev(replica, cc)

        def route(target: Target) -> Rev | None:
            return rev if target.service == "echo" else None

        gateway = Gateway(route, lambda: ["echo.default"], body_timeout=BODY_TIMEOUT)
        port = free_port()
        runner = await server.serve(gateway.app, port)
        try:
            tricklers = [asyncio.create_task(trickle(port, 60)) for _ in range(TRICKLERS)]
            await asyncio.sleep(0.5)  # every trickler has sent its headers
            timeout = aiohttp.ClientTimeout(total=15)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                statuses: list[int] = []
                for _ in range(PROBES // 4):  # four at a time, over the trickle
                    statuses += await asyncio.gather(
                        *(probe(session, f"http://127.0.0.1:{port}/") for _ in range(4))
                    )
                    await asyncio.sleep(0.05)
            outcomes = await asyncio.gather(*tricklers)
        finally:
            await runner.cleanup()
        ok = statuses.count(200)
        assert ok >= 0.9 * PROBES, f"only {ok}/{PROBES} probes 200: {sorted(set(statuses))}"
        codes = [code for code, _ in outcomes]
        assert all(code in ("408", "closed") for code in codes), sorted(set(codes))
        assert codes.count("408") >= 0.9 * TRICKLERS
        waited = max(seconds for _, seconds in outcomes)
        assert waited < BODY_TIMEOUT + 10, f"a trickler was answered only after {waited:.1f}s"
        assert rev.throttler.meter.value == 0  # nothing left holding or waiting for a slot
        print(f"cc {cc}: {ok}/{PROBES} probes 200; {codes.count('408')}/{TRICKLERS} tricklers "
              f"408, the last after {waited:.1f}s")  # fmt: skip

    asyncio.run(main())
