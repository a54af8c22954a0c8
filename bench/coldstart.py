"""Cold start: hello through the knfn gateway with its revision at zero, beside a bare spawn.

One run of `knfn dev` with the autoscaler's local overrides set so that an idle revision goes to
zero within a second or two. Each of --runs rounds:

1. wait until /status shows hello's revision with no ready replica and no replica at all, then
   time one request through the gateway from sending it to the first byte of the answer (the
   activator holds it while a replica starts: knfn's whole cold path);
2. wait for zero again, then time a bare spawn of the same function: `functions-framework` with
   the environment a hello replica gets, polled until its first 200 (the floor any
   spawn-per-replica design stays above).

Both are measured in the same run, interleaved, after one unmeasured round of each. Timings are
printed, never asserted.

    .venv/bin/python bench/coldstart.py [--runs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness import PROJECT, BenchError, KnfnDev, free_port, machine, percentile, table, wait_until

SERVICE, NAMESPACE = "hello", "default"
HOST = f"{SERVICE}.{NAMESPACE}.localhost"
# Local-only autoscaler overrides (knfn/autoscaling.py): a one-second stable window, no grace
# period before zero, a decision every 200 ms. Idle revisions reach zero in about a second.
KNFN_ENV = {
    "KNFN_AUTOSCALER_STABLE_WINDOW": "1s",
    "KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE": "0s",
    "KNFN_AUTOSCALER_TICK": "200ms",
}
ZERO_TIMEOUT = 60.0
# After /status shows zero, the retired replica may still be exiting: let it go before timing.
SETTLE_SECONDS = 0.3
SPAWN_POLL_SECONDS = 0.002
SPAWN_TIMEOUT = 30.0


def first_byte(port: int, host: str) -> tuple[float, int, bytes]:
    """Seconds from sending GET / to the status line and headers arriving; status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        elapsed = time.perf_counter() - started
        return elapsed, resp.status, resp.read()
    finally:
        conn.close()


def replica_env(dev: KnfnDev, port: int) -> dict[str, str]:
    """The environment knfn gives a hello replica (manifests, ConfigMap, runtime contract)."""
    from knfn import manifests
    from knfn.replica_env import SecretValues, resolve

    m = manifests.load(PROJECT / "knative" / "base", PROJECT / "functions")
    service = m.service(NAMESPACE, SERVICE)
    if service is None:
        raise BenchError(f"no Service {SERVICE} in knative/base")
    values = SecretValues({}, {}, dev.state_dir / "bench-secrets.json")
    return resolve(
        service,
        m,
        values,
        revision=dev.revision(SERVICE)["name"],
        port=port,
        proxy_url=f"http://127.0.0.1:{dev.port}",
        host_env=os.environ,
    )


def bare_spawn(env: dict[str, str]) -> float:
    """Seconds from Popen(functions-framework) to the first byte of its first 200."""
    port = free_port()
    argv = [str(Path(sys.executable).parent / "functions-framework")]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=PROJECT / "functions" / SERVICE,
        env={**env, "PORT": str(port)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Host": HOST})
                if conn.getresponse().status == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            finally:
                conn.close()
            if proc.poll() is not None:
                raise BenchError(f"{argv[0]} exited with code {proc.returncode} before a 200")
            if time.perf_counter() - started > SPAWN_TIMEOUT:
                raise BenchError(f"{argv[0]} gave no 200 within {SPAWN_TIMEOUT:g}s")
            time.sleep(SPAWN_POLL_SECONDS)
    finally:
        # The group: gunicorn's worker goes with its arbiter.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def at_zero(dev: KnfnDev) -> bool:
    rev = dev.revision(SERVICE)
    return rev["ready_replicas"] == 0 and not rev["replicas"]


def wait_zero(dev: KnfnDev) -> None:
    wait_until(lambda: at_zero(dev), ZERO_TIMEOUT, f"{SERVICE} scaling to zero")
    time.sleep(SETTLE_SECONDS)


def cold_request(dev: KnfnDev) -> float:
    wait_zero(dev)
    elapsed, status, body = first_byte(dev.port, HOST)
    if status != 200:
        raise BenchError(f"cold request through the gateway: HTTP {status}: {body[:300]!r}")
    return elapsed


def knfn_cold_start_mean(dev: KnfnDev) -> float | None:
    """knfn's own figure, if it exports one: mean seconds from a request at zero to ready."""
    totals = {"sum": 0.0, "count": 0.0}
    for line in dev.admin_get("/metrics").decode("utf-8", "replace").splitlines():
        name, _, rest = line.partition("{")
        kind = name.removeprefix("knfn_cold_start_duration_seconds_")
        if kind in totals and f'service="{SERVICE}"' in rest:
            totals[kind] += float(rest.rsplit(" ", 1)[1])
    return totals["sum"] / totals["count"] if totals["count"] else None


def summary(name: str, seconds: Sequence[float]) -> list[str]:
    ms = [s * 1000 for s in seconds]
    return [name] + [f"{v:.1f}" for v in (percentile(ms, 50), percentile(ms, 90), min(ms), max(ms))]


def run(runs: int) -> int:
    print(f"machine: {machine()}")
    with KnfnDev(KNFN_ENV) as dev:
        print(f"knfn: {dev.command_line()}")
        env = replica_env(dev, 0)
        # Unmeasured: the revision's first bytecode compile, the OS page cache.
        cold_request(dev)
        wait_zero(dev)
        bare_spawn(env)
        cold: list[float] = []
        spawn: list[float] = []
        for _ in range(runs):
            cold.append(cold_request(dev))
            wait_zero(dev)
            spawn.append(bare_spawn(env))
        own = knfn_cold_start_mean(dev)
        code = dev.stop()
    print(
        f"gateway: GET http://127.0.0.1:PORT/ -H 'Host: {HOST}' with hello at 0 replicas, "
        f"timed to the first byte; spawn: {Path(sys.executable).parent / 'functions-framework'} "
        f"in functions/{SERVICE}, polled every {SPAWN_POLL_SECONDS * 1000:g} ms until a 200; "
        f"knfn exit code {code}"
    )
    print()
    print(f"Cold start of {SERVICE}, {runs} runs (after one unmeasured run of each)")
    rows = [
        summary("knfn gateway, revision at zero", cold),
        summary("bare spawn, Popen to first 200", spawn),
    ]
    print(table(("what", "p50 ms", "p90 ms", "min ms", "max ms"), rows))
    cold_p50, spawn_p50 = percentile(cold, 50), percentile(spawn, 50)
    print(
        f"cold p50 / spawn p50: {cold_p50 / spawn_p50:.2f}x "
        f"({(cold_p50 - spawn_p50) * 1000:+.1f} ms)"
    )
    if own is not None:
        print(
            f"knfn's knfn_cold_start_duration_seconds (request at zero to ready), mean of all "
            f"{SERVICE} cold starts incl. the unmeasured one: {own * 1000:.1f} ms"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="measured cold starts [20]")
    args = parser.parse_args(argv)
    try:
        return run(args.runs)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
