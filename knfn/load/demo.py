"""``knfn demo`` (``make demo``): Knative's autoscale-go scenario on hello, and its plot.

Knative's autoscaling sample (knative/docs, docs/serving/autoscaling/autoscale-go/README.md)
sends "30 seconds of traffic maintaining 50 in-flight requests" with
``hey -z 30s -c 50 "http://autoscale-go...?sleep=100&prime=10000&bloat=5"`` and then looks at
the pods. hello is that sample's function (functions/hello), so the demo is the same command
through ``knfn load``, followed by recording the replicas until hello is back at zero, and the
plot of it all (knfn/load/plot.py).

It runs against the ``knfn dev`` that answers on the admin port; when none does, it starts
one (with this project and state directory, its output in ``<state>/demo/dev.log``) and stops
it at the end. That ``knfn dev`` reads its settings from the environment as usual, so
``KNFN_AUTOSCALER_STABLE_WINDOW=20s make demo`` shortens the wait for scale to zero.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from knfn.load import LoadError
from knfn.load.engine import LoadPlan, build_request
from knfn.settings import Settings

SERVICE = "hello"
PATH = "/?sleep=100&prime=10000&bloat=5"  # as the sample's hey command
CONCURRENCY = 50  # hey -c 50
DURATION = 30.0  # hey -z 30s
START_TIMEOUT = 180.0  # seconds a knfn dev started here may take to serve hello
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class DemoOptions:
    port: int
    admin_port: int
    out: Path
    tail: float  # the longest the replicas are recorded after the load (until zero)


def plan(options: DemoOptions, timeout: float = 60.0) -> LoadPlan:
    """The sample's load: 50 clients for 30 s on hello with sleep, prime and bloat."""
    request = build_request(
        SERVICE, port=options.port, method=None, path=PATH, data=None, host=None
    )
    return LoadPlan(
        request, DURATION, concurrency=CONCURRENCY, timeout=timeout,
        admin_port=options.admin_port, tail=options.tail,
    )  # fmt: skip


def _serves_hello(admin_port: int) -> bool | None:
    """None: nothing answers on the admin port; else whether /status lists hello.default."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=2) as resp:
            status = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return any(
        s.get("name") == SERVICE and s.get("namespace") == "default"
        for s in status.get("services", [])
    )


@contextmanager
def knfn_dev(
    settings: Settings, options: DemoOptions, say: Callable[[str], None]
) -> Iterator[None]:
    """A knfn dev serving hello: the running one, or one started here and stopped at exit."""
    found = _serves_hello(options.admin_port)
    if found is not None:
        if not found:
            raise LoadError(
                f"the knfn dev on admin port {options.admin_port} has no Service hello.default"
            )
        say(f"using the knfn dev on ports {options.port} and {options.admin_port}")
        yield
        return
    options.out.mkdir(parents=True, exist_ok=True)
    log = options.out / "dev.log"
    say(f"no knfn dev answers on admin port {options.admin_port}: starting one (log: {log})")
    argv = [
        sys.executable, "-m", "knfn.cli", "--project-dir", str(settings.project_dir),
        "--state-dir", str(settings.state_dir), "dev",
        "--port", str(options.port), "--admin-port", str(options.admin_port),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_hello(proc, options.admin_port, log)
        yield
    finally:
        _stop(proc, say)


def _wait_for_hello(proc: subprocess.Popen[bytes], admin_port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _serves_hello(admin_port):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise LoadError(
                f"knfn dev exited with {proc.returncode} before serving hello; its last lines "
                f"({log}):\n" + "\n".join(tail)
            )
        if time.monotonic() > deadline:
            raise LoadError(f"knfn dev did not serve hello within {START_TIMEOUT:g}s (see {log})")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes], say: Callable[[str], None]) -> None:
    """SIGTERM (knfn dev's graceful stop), then SIGKILL to its group after STOP_TIMEOUT."""
    if proc.poll() is not None:
        return
    say("stopping the knfn dev started for the demo")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
