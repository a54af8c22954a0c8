"""Gateway overhead: a warm hello direct, through a plain proxy, and through the knfn gateway.

One run of `knfn dev` with hello held at exactly one replica (no scale-out, no scale to zero), and
`wrk` against three targets in front of that same replica:

- direct: the replica's own URL (functions-framework, gunicorn);
- plain proxy: the baseline the gateway's budget is set against, the ~30-line aiohttp + uvloop
  reverse proxy below (keep-alive pool, bodies buffered), run as its own process;
- knfn gateway: `hello.default.localhost` on the gateway port (routing, throttler, metrics).

Each at 1 and 50 connections; p50, p99 and requests/s per cell (the median over --rounds), the
CPU per request of the knfn process and of the plain proxy process, then the added p50 at 1
connection and the throughput relative to direct at 50. Timings are printed,
never asserted: compare the ratios, taken in one run, not the absolute numbers.

    .venv/bin/python bench/gateway.py [--duration 6] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web
from harness import (
    BenchError,
    KnfnDev,
    free_port,
    http_get,
    machine,
    serve_until_sigterm,
    table,
    wait_until,
)

HOST = "hello.default.localhost"
CONNECTIONS = (1, 50)
WARMUP_SECONDS = 2
# Local-only autoscaler overrides for the knfn under test: hello neither scales to zero during
# the run (an hour-long stable window) nor out (one replica per revision), so all three targets
# reach the very same single replica.
KNFN_ENV = {
    "KNFN_AUTOSCALER_STABLE_WINDOW": "3600s",
    "KNFN_MAX_REPLICAS_PER_REVISION": "1",
}


# -- the baseline: a plain reverse proxy ------------------------------------------------------
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


async def plain_proxy(port: int, upstream: str) -> None:
    """Serve 127.0.0.1:port, forwarding everything to upstream over one keep-alive pool."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read() if request.body_exists else None
        async with session.request(
            request.method,
            upstream + request.rel_url.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as resp:
            payload = await resp.read()
            out = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            }
            return web.Response(status=resp.status, body=payload, headers=out)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    await serve_until_sigterm(app, port)
    await session.close()


def start_plain_proxy(upstream: str) -> tuple[subprocess.Popen[bytes], int]:
    """This script in its proxy role, as a separate process (as the gateway is one)."""
    port = free_port()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-plain-proxy",
        upstream,
        "--proxy-port",
        str(port),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    wait_until(lambda: _answers(port), 15, f"the plain proxy on port {port} answering")
    return proc, port


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/", HOST)[0] == 200
    except OSError:
        return False


# -- wrk, and the CPU the processes in the middle spend --------------------------------------
@dataclass(frozen=True)
class Result:
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors
    # CPU (user + system) per request of each watched process during the run, in microseconds.
    cpu_us: dict[str, float] = field(default_factory=dict)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def parse_wrk(output: str) -> Result:
    """The figures of `wrk --latency` output; BenchError quoting it if they are not there."""
    latency = {m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in _PERCENTILE.finditer(output)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    if rps is None or total is None or set(latency) != {"50", "99"}:
        raise BenchError(f"unexpected wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Result(latency["50"], latency["99"], float(rps[1]), int(total[1]), errors)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc (0.0 where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, connections: int, seconds: int, watch: Mapping[str, int]) -> Result:
    """One wrk run against port; CPU per request of the watched processes (name -> pid)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"]
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    result = parse_wrk(done.stdout)
    per_request = 1e6 / max(result.requests, 1)
    cpu = {name: (cpu_seconds(pid) - before[name]) * per_request for name, pid in watch.items()}
    return replace(result, cpu_us=cpu)


def wrk_line(connections: int, seconds: int) -> str:
    return (
        f"wrk -t1 -c{connections} -d{seconds}s --latency -H 'Host: {HOST}' http://127.0.0.1:PORT/"
    )


def median_result(results: Sequence[Result]) -> Result:
    return Result(
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(r.rps for r in results),
        sum(r.requests for r in results),
        sum(r.errors for r in results),
        {name: statistics.median(r.cpu_us[name] for r in results) for name in results[0].cpu_us},
    )


# -- the run ----------------------------------------------------------------------------------
def one_replica(dev: KnfnDev) -> str:
    """The URL of hello's single ready replica; BenchError unless there is exactly one."""
    rev = dev.revision("hello")
    ready = [r for r in rev["replicas"] if r["ready"]]
    if rev["ready_replicas"] != 1 or len(rev["replicas"]) != 1 or len(ready) != 1:
        raise BenchError(f"hello should have exactly one ready replica, /status says: {rev}")
    url: str = ready[0]["url"]
    return url


def measure(
    targets: Mapping[str, int], watch: Mapping[str, int], seconds: int, rounds: int
) -> dict[tuple[str, int], Result]:
    """Every target at every connection count, interleaved round by round; medians."""
    runs: dict[tuple[str, int], list[Result]] = {}
    for name, port in targets.items():
        status, body = http_get(port, "/", HOST)
        if status != 200:
            raise BenchError(f"{name} answered {status}: {body[:300]!r}")
        wrk(port, max(CONNECTIONS), WARMUP_SECONDS, {})
    for _ in range(rounds):
        for connections in CONNECTIONS:
            for name, port in targets.items():
                result = wrk(port, connections, seconds, watch)
                runs.setdefault((name, connections), []).append(result)
    return {key: median_result(results) for key, results in runs.items()}


def report(
    results: Mapping[tuple[str, int], Result], names: Sequence[str], watched: Sequence[str]
) -> str:
    header = ["target", "conns", "p50 ms", "p99 ms", "req/s", "errors"]
    header += [f"{w} cpu us/req" for w in watched]
    rows = [
        [name, str(c), f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}", f"{r.rps:,.0f}", str(r.errors)]
        + [f"{r.cpu_us[w]:.0f}" for w in watched]
        for c in CONNECTIONS
        for name in names
        for r in [results[(name, c)]]
    ]
    lines = [table(header, rows), ""]
    low, high = min(CONNECTIONS), max(CONNECTIONS)
    direct_low, direct_high = results[(names[0], low)], results[(names[0], high)]
    ratio_rows = [
        [
            name,
            f"{results[(name, low)].p50_ms - direct_low.p50_ms:+.3f}",
            f"{results[(name, high)].rps / direct_high.rps:.2f}x",
        ]
        for name in names[1:]
    ]
    lines.append(table(("vs direct", f"added p50 ms @{low}", f"req/s ratio @{high}"), ratio_rows))
    gateway, plain = names[-1], names[1]
    lines.append(
        f"{gateway} vs {plain}: p50 @{low} "
        f"{results[(gateway, low)].p50_ms - results[(plain, low)].p50_ms:+.3f} ms, "
        f"req/s @{high} {results[(gateway, high)].rps / results[(plain, high)].rps:.2f}x"
    )
    return "\n".join(lines)


def run(seconds: int, rounds: int) -> int:
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    with KnfnDev(KNFN_ENV) as dev:
        print(f"knfn: {dev.command_line()}")
        direct = one_replica(dev)
        proxy, proxy_port = start_plain_proxy(direct)
        try:
            targets = {
                "direct": int(direct.rsplit(":", 1)[1]),
                "plain proxy": proxy_port,
                "knfn gateway": dev.port,
            }
            watch = {"knfn": dev.pid, "plain proxy": proxy.pid}
            results = measure(targets, watch, seconds, rounds)
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(10)
        after = one_replica(dev)
        code = dev.stop()
    print(f"load: {wrk_line(min(CONNECTIONS), seconds)}  (and -c{max(CONNECTIONS)})")
    print(
        f"hello: one replica ({direct}), the same before and after: {after == direct}; "
        f"median of {rounds} round(s) of {seconds}s each; knfn exit code {code}"
    )
    print(
        "cpu us/req: user+system CPU of that process during the run over requests served; "
        "the knfn process also copies every replica log line (hello logs one per request)"
    )
    print()
    print(f"Gateway overhead, warm hello ({', '.join(f'{c} conn' for c in CONNECTIONS)})")
    print(report(results, list(targets), list(watch)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run [6]")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, medians reported [1]")
    parser.add_argument("--serve-plain-proxy", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--proxy-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_plain_proxy:
        uvloop.run(plain_proxy(args.proxy_port, args.serve_plain_proxy))
        return 0
    try:
        return run(args.duration, args.rounds)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
