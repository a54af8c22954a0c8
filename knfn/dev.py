"""``knfn dev``: the whole system on one machine, up in order and down in reverse.

Start-up: 1. backing services (or the external ones), 2. migrations and buckets (the admin
processes), 3. one ready replica per Knative Service, 4. the gateway. Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from knfn import admin, manifests
from knfn.backing import services
from knfn.gateway import Gateway, Route
from knfn.logs import Printer
from knfn.ports import free_port
from knfn.replica_env import SecretValues, resolve
from knfn.settings import Settings
from knfn.supervisor import Replica, ReplicaSpec

READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class DevOptions:
    port: int
    host_env: Mapping[str, str]


def configured_buckets(m: manifests.Manifests) -> list[str]:
    """Every bucket a ConfigMap names in S3_BUCKET (the admin Job creates the same)."""
    names = {
        name.strip()
        for data in m.config_maps.values()
        for name in data.get("S3_BUCKET", "").split(",")
        if name.strip()
    }
    return sorted(names)


async def run(settings: Settings, options: DevOptions, say: Printer) -> None:
    """Bring everything up, serve until SIGINT/SIGTERM, then shut down in reverse."""
    m = manifests.load(settings.knative_dir, settings.functions_dir)
    loop = asyncio.get_running_loop()

    # 1. Backing services (blocking calls: run them off the loop).
    backing = await loop.run_in_executor(None, services.up, settings.backing)
    for name in backing.started:
        say.line("knfn", f"started {name}")

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    replicas: list[Replica] = []
    runner: web.AppRunner | None = None
    try:
        # 2. Admin processes, as the cluster's Jobs would run them.
        applied = await loop.run_in_executor(None, admin.migrate, settings, backing)
        say.line("knfn", f"migrations applied: {len(applied)}")
        created = await loop.run_in_executor(None, admin.buckets, backing, configured_buckets(m))
        say.line("knfn", f"buckets created: {len(created)}")

        # 3. One replica per Service, started together, each waited for.
        proxy_url = f"http://127.0.0.1:{options.port}"
        values = SecretValues(
            backing.function_env(), options.host_env, settings.state_dir / "secrets.json"
        )
        routes: dict[tuple[str, str], Route] = {}
        ff = str(Path(sys.executable).parent / "functions-framework")
        for svc in m.services:
            revision = f"{svc.name}-00001"
            port = free_port()
            env = resolve(
                svc,
                m,
                values,
                revision=revision,
                port=port,
                proxy_url=proxy_url,
                host_env=options.host_env,
            )
            spec = ReplicaSpec(
                svc.name,
                revision,
                1,
                (ff,),
                settings.functions_dir / svc.name,
                env,
                port,
                svc.container.readiness_path,
            )
            replicas.append(Replica(spec, say))
            routes[(svc.namespace, svc.name)] = Route(svc.namespace, svc.name, svc.timeout_seconds)
        await asyncio.gather(*(r.start() for r in replicas))
        await asyncio.gather(*(r.wait_ready(READY_TIMEOUT) for r in replicas))
        for replica, svc in zip(replicas, m.services, strict=True):
            routes[(svc.namespace, svc.name)].backends.append(replica.url)

        # 4. The gateway.
        runner = web.AppRunner(Gateway(lambda: routes).app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", options.port).start()
        for svc in m.services:
            say.line(
                "knfn", f"{svc.name:<14} http://{svc.name}.{svc.namespace}.localhost:{options.port}"
            )
        say.line("knfn", "ready; Ctrl-C stops everything")
        await stop.wait()
    finally:
        say.line("knfn", "shutting down")
        # 1. Stop taking requests.
        if runner is not None:
            await runner.cleanup()
        # 2. Replicas drain and stop (SIGTERM, grace, SIGKILL).
        await asyncio.gather(*(r.stop(grace=10.0) for r in replicas), return_exceptions=True)
        # 3. Backing services this run started (ones already running are left running).
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, services.down, settings.backing, backing.started)
        say.line("knfn", "stopped")
