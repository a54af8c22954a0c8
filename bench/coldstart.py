"""Cold start: hello through the gateway at zero, replicas forked vs spawned, and a bare spawn.

Two runs of `knfn dev`, one per way of starting replicas (`--replica-start fork`, the default:
forks of the revision's template; then `spawn`: a new functions-framework process each), with
the autoscaler's local overrides set so that an idle revision goes to zero within a second or
two. Each of --runs rounds in each run:

1. wait until /status shows hello's revision with no ready replica and no replica at all, then
   time one request through the gateway from sending it to the first byte of the answer (the
   activator holds it while a replica starts: knfn's whole cold path); in the first rounds,
   right after the answer, sum the PSS (/proc/PID/smaps_rollup) of the replica's process group
   (gunicorn's arbiter and worker), and in the fork run that of the template and of its spare
   (the started server a cold start takes, knfn/serving/template.py);
2. wait for zero again, then time a bare spawn of the same function: `functions-framework` with
   the environment a hello replica gets, polled until its first 200 (the floor any
   spawn-per-replica design stays above).

All after one unmeasured round of each. Then, in the fork run, a scale-out: with hello at zero,
SCALE_OUT_CLIENTS requests that each sleep a few seconds (20x hello's target of 10 in flight),
timed from the first /status showing the autoscaler's decision of 20 replicas (its max-scale)
to 20 ready, and from the requests being sent. Last, `knfn dev` started twice on one state
directory: cold (initdb, buckets, revisions) and warm (what a user's second start costs), from
the process starting to its ready line. Timings are printed, never asserted.

    .venv/bin/python bench/coldstart.py [--runs 50]
    .venv/bin/python bench/coldstart.py --startup-only --runs 3   # the start-up figures alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from harness import PROJECT, BenchError, KnfnDev, free_port, machine, percentile, table, wait_until

SERVICE, NAMESPACE = "hello", "default"
HOST = f"{SERVICE}.{NAMESPACE}.localhost"
# Local-only autoscaler overrides (knfn/serving/autoscaler_config.py): a one-second stable
# window, no grace period before zero, a decision every 200 ms. Idle revisions reach zero in
# about a second.
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
PSS_ROUNDS = 5  # rounds whose replica's memory is measured (the median is reported)
MODES = ("fork", "spawn")
SCALE_OUT = 20  # hello's max-scale (knative/base/service-hello.yaml)
SCALE_OUT_CLIENTS = 200  # 20x its target of 10 in flight per replica
SCALE_OUT_SLEEP_MS = 2000  # each request stays in flight while the revision scales out
SCALE_OUT_TIMEOUT = 60.0


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
    from knfn.serving.replica_env import SecretValues, resolve

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
    figures = (percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), min(ms), max(ms))
    return [name] + [f"{v:.1f}" for v in figures]


def pss_kib(pid: int) -> int:
    """Proportional set size of one process in KiB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def group_pss(leader: int) -> int:
    """PSS in KiB of every process in the group led by leader (a replica and its workers)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return sum(pss_kib(pid) for pid in pids if stat_fields(pid)[2:3] == [str(leader)])


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def replica_memory(dev: KnfnDev) -> tuple[int, int, int] | None:
    """PSS of the replica that just answered, of its template and of the template's spare
    (its other child, once started: 0 for a spawned replica)."""
    replicas = dev.revision(SERVICE)["replicas"]
    if not replicas or replicas[0]["pid"] is None:
        return None
    pid = int(replicas[0]["pid"])
    ppid = int((stat_fields(pid) or ["", "0"])[1])
    template = ppid if ppid and ppid != dev.pid else 0
    if not template:
        return group_pss(pid), 0, 0
    spare = 0
    for _ in range(100):  # the next spare is forked behind the one taken: until it is started
        spares = [c for c in children(template) if c != pid]
        if spares and len(children(spares[0])) >= 1:
            time.sleep(0.2)  # its worker's warm-up request
            spare = group_pss(spares[0])
            break
        time.sleep(0.02)
    return group_pss(pid), pss_kib(template), spare


async def hold(port: int, clients: int) -> list[int]:
    """clients concurrent requests to hello that each sleep SCALE_OUT_SLEEP_MS; their statuses."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/?sleep={SCALE_OUT_SLEEP_MS}"
    timeout = aiohttp.ClientTimeout(total=SCALE_OUT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> int:
            async with session.get(url, headers={"Host": HOST}) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one() for _ in range(clients)))


def scale_out(dev: KnfnDev) -> tuple[float, float, Counter[int]]:
    """From zero: seconds from the decision of SCALE_OUT replicas, and from the requests being
    sent, to SCALE_OUT ready (/status polled every few ms); the requests' statuses. The first
    replica takes every held request (containerConcurrency 0, as the activator hands them
    over) and serves them with its gunicorn threads, so some may time out (504): counted."""
    wait_zero(dev)
    statuses: list[int] = []
    load = threading.Thread(
        target=lambda: statuses.extend(asyncio.run(hold(dev.port, SCALE_OUT_CLIENTS)))
    )
    sent = time.perf_counter()
    load.start()
    decided: float | None = None
    while True:
        rev = dev.revision(SERVICE)
        now = time.perf_counter()
        if decided is None and rev["desired_replicas"] >= SCALE_OUT:
            decided = now
        if rev["ready_replicas"] >= SCALE_OUT:
            break
        if now - sent > SCALE_OUT_TIMEOUT:
            raise BenchError(f"{SERVICE} not at {SCALE_OUT} ready within {SCALE_OUT_TIMEOUT:g}s")
        time.sleep(0.005)
    load.join()
    if decided is None:
        raise BenchError(f"scale-out: /status never showed {SCALE_OUT} desired")
    return now - decided, now - sent, Counter(statuses)


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of root and every process below it, those reaped
    included (their parent's cutime/cstime), by kind: knfn, templates (the root template and
    what it forked: revision templates, their spares and replicas), replicas spawned, others
    by name (postgres, weed)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        try:
            raw = (entry / "stat").read_text() if entry.name.isdigit() else ""
            argv = (entry / "cmdline").read_bytes().decode("utf-8", "replace") if raw else ""
        except OSError:
            continue
        if raw:
            fields = raw.rsplit(")", 1)[1].split()
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            kind = next((k for mark, k in CPU_KINDS if mark in argv), name)
            procs[int(entry.name)] = (int(fields[1]), sum(map(int, fields[11:15])) / tick, kind)
    kinds: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            kind = "knfn" if pid == root else procs[pid][2]
            kinds[kind] = kinds.get(kind, 0.0) + procs[pid][1]
            todo += [child for child, (ppid, _, _) in procs.items() if ppid == pid]
    return kinds


CPU_KINDS = (("template_main", "templates"), ("functions-framework", "spawned replicas"))


def startups(warm: int = 1) -> tuple[float, list[float]]:
    """Seconds from `knfn dev` starting to its ready line: on a new state dir, then `warm` times
    again on it (each after a clean stop); with the CPU seconds spent by then, and the load."""
    with tempfile.TemporaryDirectory(prefix="knfn-bench-state-") as tmp:
        ports = {"KNFN_PG_PORT": str(free_port()), "KNFN_S3_PORT": str(free_port())}
        seconds = []
        for _ in range(1 + warm):
            load = os.getloadavg()[0]
            with KnfnDev({**KNFN_ENV, **ports}, state_dir=Path(tmp) / "state") as dev:
                cpu = cpu_seconds(dev.pid)
                seconds.append(dev.start_seconds)
                parts = ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                )
                print(
                    f"knfn: {dev.command_line()}: ready in {dev.start_seconds:.2f} s (load "
                    f"{load:.2f}); CPU by then {sum(cpu.values()):.2f} s: {parts}",
                    flush=True,
                )
        return seconds[0], seconds[1:]


def run_startups(warm: int) -> int:
    """Only the start-up figures: one start on a new state dir, then `warm` warm ones."""
    print(f"machine: {machine()}")
    cold_start, warm_starts = startups(warm)
    print(
        f"knfn dev start to ready (target warm: 2 s): new state dir {cold_start:.2f} s, "
        f"warm (x{len(warm_starts)}) median {percentile(warm_starts, 50):.2f} s, "
        f"min {min(warm_starts):.2f} s, max {max(warm_starts):.2f} s"
    )
    return 0


class Measured:
    """What one knfn run measured."""

    def __init__(self) -> None:
        self.cold: list[float] = []
        self.bare: list[float] = []
        self.memory: list[tuple[int, int, int]] = []
        self.own: float | None = None
        self.scale_out: tuple[float, float, Counter[int]] | None = None


def measure(mode: str, runs: int) -> Measured:
    got = Measured()
    with KnfnDev({**KNFN_ENV, "KNFN_REPLICA_START": mode}) as dev:
        print(f"knfn: {dev.command_line()}", flush=True)
        env = replica_env(dev, 0)
        # Unmeasured: the revision's first bytecode compile, the OS page cache.
        cold_request(dev)
        wait_zero(dev)
        bare_spawn(env)
        for _ in range(runs):
            got.cold.append(cold_request(dev))
            if len(got.memory) < PSS_ROUNDS and (memory := replica_memory(dev)) is not None:
                got.memory.append(memory)
            wait_zero(dev)
            got.bare.append(bare_spawn(env))
        got.own = knfn_cold_start_mean(dev)
        if mode == "fork":
            got.scale_out = scale_out(dev)
        code = dev.stop()
    print(f"knfn --replica-start {mode}: exit code {code}", flush=True)
    return got


def median(values: Sequence[int]) -> float:
    return percentile(values, 50) if values else 0.0


def run(runs: int) -> int:
    print(f"machine: {machine()}")
    results = {mode: measure(mode, runs) for mode in MODES}
    cold_start, (warm_start,) = startups()
    fork, spawn = results["fork"], results["spawn"]
    bare = fork.bare + spawn.bare
    print(
        f"gateway: GET http://127.0.0.1:PORT/ -H 'Host: {HOST}' with hello at 0 replicas, "
        f"timed to the first byte; bare spawn: "
        f"{Path(sys.executable).parent / 'functions-framework'} in functions/{SERVICE}, polled "
        f"every {SPAWN_POLL_SECONDS * 1000:g} ms until a 200, interleaved in both runs"
    )
    print()
    print(f"Cold start of {SERVICE}, {runs} runs each (after one unmeasured run of each)")
    rows = [
        summary("gateway at zero, forked replica", fork.cold),
        summary("gateway at zero, spawned replica", spawn.cold),
        summary(f"bare spawn, Popen to first 200 (x{len(bare)})", bare),
    ]
    print(table(("what", "p50 ms", "p90 ms", "p99 ms", "min ms", "max ms"), rows))
    bare_p50 = percentile(bare, 50)
    for mode, got in results.items():
        p50 = percentile(got.cold, 50)
        print(
            f"{mode} p50 / bare spawn p50: {p50 / bare_p50:.2f}x ({(p50 - bare_p50) * 1e3:+.1f} ms)"
        )
    print()
    print(f"Memory right after a cold start, median of the first {PSS_ROUNDS} rounds")
    mib = 1024.0
    memory_rows = [
        ["forked replica (arbiter + worker)", f"{median([m[0] for m in fork.memory]) / mib:.1f}"],
        ["spawned replica (arbiter + worker)", f"{median([m[0] for m in spawn.memory]) / mib:.1f}"],
        ["template of the forked replicas", f"{median([m[1] for m in fork.memory]) / mib:.1f}"],
        ["template's spare (arbiter + worker)", f"{median([m[2] for m in fork.memory]) / mib:.1f}"],
    ]
    print(table(("process group", "PSS MiB"), memory_rows))
    for mode, got in results.items():
        if got.own is not None:
            print(
                f"knfn_cold_start_duration_seconds ({mode}; request at zero to ready), mean of "
                f"all {SERVICE} cold starts incl. the unmeasured one: {got.own * 1000:.1f} ms"
            )
    print()
    if fork.scale_out is not None:
        decision, sent, statuses = fork.scale_out
        print(
            f"Scale-out of {SERVICE} from 0 to {SCALE_OUT} forked replicas under "
            f"{SCALE_OUT_CLIENTS} requests of {SCALE_OUT_SLEEP_MS} ms (target: 1 s from the "
            f"decision): decision to {SCALE_OUT} ready {decision * 1000:.0f} ms; requests sent "
            f"to {SCALE_OUT} ready {sent * 1000:.0f} ms; statuses {dict(statuses)}"
        )
    print(
        f"knfn dev start to ready (target warm: 2 s): new state dir {cold_start:.2f} s, "
        f"warm (second start on it) {warm_start:.2f} s"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=50, help="measured cold starts per mode [50]")
    parser.add_argument(
        "--startup-only",
        action="store_true",
        help="only time `knfn dev` to ready: a new state dir, then --runs warm starts on it",
    )
    args = parser.parse_args(argv)
    try:
        if args.startup_only:
            return run_startups(args.runs)
        return run(args.runs)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
