"""Replicas as real functions-framework processes: long output lines, unreadable output.

A replica that logs a line of any length keeps serving and its text reaches the printer; one
whose output cannot be read is stopped and replaced by serving, as a crashed one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from knfn import manifests as mf
from knfn.logs import PARTIAL_MARKER, Printer
from knfn.serving import autoscaler_config, autoscaling
from knfn.serving.budget import Caps
from knfn.serving.context import Context
from knfn.serving.kpa import Autoscaler
from knfn.serving.replica import Replica, ReplicaSpec
from knfn.serving.replica_env import SecretValues
from knfn.serving.replica_records import ReplicaRecords, process_table
from knfn.serving.revision import Revision, RevisionStore
from knfn.serving.revision_runtime import RevisionRuntime
from tests.support import free_port

pytestmark = pytest.mark.slow

FF = (str(Path(sys.executable).parent / "functions-framework"),)
# util-linux's setpriv where installed; else the test of that kind runs the Python wrapper too.
SETPRIV = shutil.which("setpriv")
SHOUT = '''\
"""Writes n bytes to stdout: a line (nl=1) or bytes without a newline (nl=0)."""

import sys

import functions_framework


@functions_framework.http
def shout(request):
    n = int(request.args.get("n", "0"))
    text = request.args.get("text", "x")
    if request.args.get("nl", "1") == "1":
        print(text * n, flush=True)
    else:
        sys.stdout.write(text * n)
        sys.stdout.flush()
    return "ok"
'''


class Collect(Printer):
    """Keeps printed lines; raises once a line holds ``fail_on`` (a printer that broke)."""

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def line(self, prefix: str, text: str) -> None:
        if self.fail_on and self.fail_on in text:
            raise OSError("printer broke")
        self.lines.append((prefix, text))


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    code = tmp_path / "shout"
    code.mkdir()
    (code / "main.py").write_text(SHOUT)
    return code


def env(port: int) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "FUNCTION_TARGET": "shout",
        "PYTHONUNBUFFERED": "1",
    }


def joined(lines: list[tuple[str, str]], prefix: str) -> str:
    """The replica's output with partial pieces joined back into lines."""
    out = []
    for p, text in lines:
        if p == prefix:
            out.append(
                text.removesuffix(PARTIAL_MARKER) if text.endswith(PARTIAL_MARKER) else text + "\n"
            )
    return "".join(out)


def test_lines_of_any_length_pass_and_the_replica_keeps_serving(
    function_dir: Path, tmp_path: Path
) -> None:
    """200 KB line, then 1 MB without a newline, then a normal line: all printed (marked
    pieces), and 50 small requests afterwards all answer promptly."""
    printer = Collect()
    port = free_port()
    records = ReplicaRecords(tmp_path / "run")
    spec = ReplicaSpec("shout", "shout-00001", 1, FF, function_dir, env(port), port)
    replica = Replica(spec, printer, records)

    async def main() -> list[float]:
        await replica.start()
        assert [r.pid for _, r in records.records() if r] == [replica.pid]
        try:
            await replica.wait_ready(30)
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                for query in ("n=200000", "n=1048576&text=y&nl=0", "n=1&text=normal"):
                    async with http.get(f"/?{query}", timeout=aiohttp.ClientTimeout(10)) as r:
                        assert r.status == 200
                took = []
                for _ in range(50):
                    started = time.monotonic()
                    async with http.get("/?n=10", timeout=aiohttp.ClientTimeout(5)) as r:
                        assert r.status == 200
                    took.append(time.monotonic() - started)
            await asyncio.sleep(0.5)  # the last output reaches the printer
            assert not replica.exited and replica.output_error is None
            return took
        finally:
            await replica.stop(grace=5)

    took = asyncio.run(main())
    assert max(took) < 2.0, took
    text = joined(printer.lines, spec.name)
    assert "x" * 200000 + "\n" in text
    assert "y" * 1048576 + "normal\n" in text
    assert any(t.endswith(PARTIAL_MARKER) for _, t in printer.lines)
    assert max(len(t.encode()) for _, t in printer.lines) <= 16 * 1024 + len(PARTIAL_MARKER)
    assert records.records() == []  # reaped, so forgotten


def test_unreadable_output_gets_the_replica_replaced(function_dir: Path, tmp_path: Path) -> None:
    """The output reader fails (the printer breaks): serving stops that replica and starts
    another, which serves."""
    printer = Collect(fail_on="boom")
    svc = mf.Service(
        "shout",
        "default",
        tmp_path / "shout.yaml",
        {},
        mf.Container((("FUNCTION_TARGET", "shout"),), ()),
    )
    manifests = mf.Manifests((svc,), {}, {}, ())
    scaler = autoscaler_config.AutoscalerConfig.from_configmap({})
    records = ReplicaRecords(tmp_path / "run")
    ctx = Context(
        printer=printer,
        store=cast(RevisionStore, None),  # unused by a revision's runtime
        values=SecretValues({}, {}, tmp_path / "secrets.json"),
        proxy_url="http://127.0.0.1:9",
        host_env={"PATH": os.environ["PATH"]},
        argv=FF,
        new_decider=lambda s: Autoscaler(autoscaling.resolve_revision_scaling({}, 0, scaler)),
        caps=Caps(4, 4),
        functions_dir=tmp_path,
        new_replica=lambda spec: Replica(spec, printer, records),
    )
    ready: list[str] = []

    class Serving:
        """What a revision's runtime asks of serving."""

        def __init__(self) -> None:
            self.ctx, self.manifests = ctx, manifests

        def admit(self, rt: Any) -> int:
            """The replica budget's answer: what it wants, up to 4."""
            return min(rt.desired if rt.routable else 0, 4)

        def revision_ready(self, rt: Any) -> None:
            ready.append(rt.name)

    revision = Revision("default", "shout", "shout-00001", 1, "d", {}, function_dir)
    runtime = RevisionRuntime(cast(Any, Serving()), svc, revision)

    async def wait_for(check: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not check():
            assert time.monotonic() < deadline, f"{what}; printed: {printer.lines[-5:]}"
            await asyncio.sleep(0.05)

    async def main() -> None:
        runtime.reconcile()
        await wait_for(lambda: runtime.ready == 1, "first replica not ready")
        first = runtime.slots[0].replica
        async with aiohttp.ClientSession() as http:
            # The replica may be stopped before it answers: that is the point.
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{first.url}/?text=boom&n=1") as r:
                    await r.read()
            await wait_for(lambda: first.exited, "first replica not stopped")
            await wait_for(
                lambda: runtime.ready == 1 and runtime.slots[0].replica is not first,
                "no replacement",
            )
            second = runtime.slots[0].replica
            async with http.get(f"{second.url}/?n=3") as r:
                assert r.status == 200
        assert second.spec.index == 2
        await runtime.stop()

    asyncio.run(main())
    assert any("output could not be read" in text for _, text in printer.lines)
    assert records.records() == []


@pytest.mark.parametrize("setpriv", [SETPRIV, None], ids=["setpriv", "python"])
def test_wrapped_command_dies_with_its_parent(setpriv: str | None) -> None:
    """A command started through the wrapper (either kind) dies when its parent is SIGKILLed."""
    parent_code = (
        "import os, subprocess, sys, time\n"
        "from knfn.serving import pdeathsig\n"
        f"prefix = pdeathsig.wrapper(os.getpid(), {setpriv!r})\n"
        "child = subprocess.Popen([*prefix, 'sleep', '120'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
        assert time.monotonic() < deadline, "the wrapper did not exec the command"
        time.sleep(0.01)
    parent.kill()
    parent.wait()
    killed = time.monotonic()
    while child in process_table():
        assert time.monotonic() - killed < 3, "the command outlived its parent"
        time.sleep(0.01)
