"""``knfn dev``: the whole system on one machine, up in order and down in reverse.

Start-up: 1. backing services (or the external ones), 2. migrations and buckets (the admin
processes), 3. Serving: a revision per Service and its initial replicas, 4. Eventing: the
broker's store and dispatchers, 5. the gateway (with the broker ingress) and the admin API,
6. the autoscaler loop (and, with --watch, the watcher). Shutdown reverses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from knfn import admin, admin_api, autoscaling, manifests, watch
from knfn.backing import services
from knfn.errors import KnfnError
from knfn.eventing import config as eventing_config
from knfn.eventing.runtime import Eventing
from knfn.gateway import Gateway
from knfn.kpa import Autoscaler
from knfn.logs import Printer
from knfn.replica_env import SecretValues
from knfn.replica_records import ReplicaRecords
from knfn.revisions import RevisionStore
from knfn.serving import Caps, Context, Serving
from knfn.settings import Settings

READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class DevOptions:
    port: int
    admin_port: int
    watch: bool
    host_env: Mapping[str, str]
    dispatchers: int = 1


def _status(serving: Serving, eventing: Eventing) -> admin_api.Status:
    async def status() -> dict[str, Any]:
        return {**serving.status(), **(await eventing.status())}

    return status


def configured_buckets(m: manifests.Manifests) -> list[str]:
    """Every bucket a ConfigMap names in S3_BUCKET (the admin Job creates the same)."""
    names = {
        name.strip()
        for data in m.config_maps.values()
        for name in data.get("S3_BUCKET", "").split(",")
        if name.strip()
    }
    return sorted(names)


def autoscaler_config(
    m: manifests.Manifests, env: Mapping[str, str]
) -> autoscaling.AutoscalerConfig:
    """config-autoscaler from the manifests (as in the cluster), then the local-only overrides."""
    data = m.config_maps.get(("knative-serving", "config-autoscaler"), {})
    try:
        cfg = autoscaling.AutoscalerConfig.from_configmap(data)
        return autoscaling.with_local_overrides(cfg, env)
    except autoscaling.AutoscalingError as exc:
        raise KnfnError(f"ConfigMap knative-serving/config-autoscaler: {exc}") from exc


async def run(settings: Settings, options: DevOptions, say: Printer) -> None:
    """Bring everything up, serve until SIGINT/SIGTERM, then shut down in reverse."""
    m = manifests.load(settings.knative_dir, settings.functions_dir)
    brokers = eventing_config.load(m)
    scaler_cfg = autoscaler_config(m, options.host_env)
    loop = asyncio.get_running_loop()

    # 1. Backing services (blocking calls: run them off the loop).
    backing = await loop.run_in_executor(None, services.up, settings.backing)
    for name in backing.started:
        say.line("knfn", f"started {name}")

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    serving: Serving | None = None
    eventing: Eventing | None = None
    runners: list[web.AppRunner] = []
    background: list[asyncio.Task[None]] = []
    try:
        # 2. Admin processes, as the cluster's Jobs would run them.
        applied = await loop.run_in_executor(None, admin.migrate, settings, backing)
        say.line("knfn", f"migrations applied: {len(applied)}")
        created = await loop.run_in_executor(None, admin.buckets, backing, configured_buckets(m))
        say.line("knfn", f"buckets created: {len(created)}")

        # 3. Serving: a revision per Service, its initial replicas (after stopping what a
        #    killed run left of its replicas).
        records = ReplicaRecords(settings.state_dir / "run" / "replicas")
        for name in await loop.run_in_executor(None, records.stop_leftovers):
            say.line("knfn", f"stopped {name}, left running by an earlier run")
        store = await loop.run_in_executor(
            None, RevisionStore, backing.knfn_database_url, settings.state_dir / "revisions"
        )
        ctx = Context(
            printer=say,
            store=store,
            values=SecretValues(
                backing.function_env(), options.host_env, settings.state_dir / "secrets.json"
            ),
            proxy_url=f"http://127.0.0.1:{options.port}",
            host_env=options.host_env,
            argv=(str(Path(sys.executable).parent / "functions-framework"),),
            new_decider=lambda svc: Autoscaler(
                autoscaling.resolve_revision_scaling(
                    svc.annotations, svc.container_concurrency, scaler_cfg
                )
            ),
            caps=Caps.for_machine(options.host_env),
            functions_dir=settings.functions_dir,
            records=records,
        )
        serving = Serving(ctx, m)
        await serving.apply(m)

        # 4. Eventing: deliveries go through the gateway, so a function at zero is started.
        eventing = Eventing(
            backing.knfn_database_url,
            brokers,
            f"http://127.0.0.1:{options.port}",
            lambda message: say.line("knfn", message),
            dispatchers=options.dispatchers,
        )
        await eventing.start()

        # 5. The gateway (with the broker ingress at its Knative address) and the admin API.
        gateway = Gateway(serving.route, serving.known_hosts, eventing.local)
        admin_app = admin_api.build(_status(serving, eventing), eventing.events)
        for app, port in ((gateway.app, options.port), (admin_app, options.admin_port)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)

        # 6. The autoscaler loop, and the watcher.
        background.append(asyncio.create_task(serving.run(scaler_cfg.tick_interval, stop)))
        if options.watch:
            background.append(
                asyncio.create_task(watch.run(settings, serving, eventing, say, stop))
            )
        await _wait_ready(serving, stop)
        for state in serving.services.values():
            svc = state.service
            say.line(
                "knfn", f"{svc.name:<14} http://{svc.name}.{svc.namespace}.localhost:{options.port}"
            )
        say.line("knfn", f"admin          http://127.0.0.1:{options.admin_port}/status")
        say.line("knfn", "ready; Ctrl-C stops everything")
        await stop.wait()
    finally:
        say.line("knfn", "shutting down")
        stop.set()
        # 1. Stop taking requests.
        for runner in runners:
            await runner.cleanup()
        # 2. Background loops end; dispatchers stop; replicas drain (SIGTERM, grace, SIGKILL).
        await asyncio.gather(*background, return_exceptions=True)
        if eventing is not None:
            await eventing.stop()
        if serving is not None:
            await serving.stop()
        # 3. Backing services this run started (ones already running are left running).
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, services.down, settings.backing, backing.started)
        say.line("knfn", "stopped")


async def _wait_ready(serving: Serving, stop: asyncio.Event) -> None:
    """Until every Service's latest revision is ready (or scaled to zero by design)."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while not stop.is_set():
        if all(s.latest_ready for s in serving.services.values()):
            return
        if asyncio.get_running_loop().time() > deadline:
            waiting = [k[1] for k, s in serving.services.items() if not s.latest_ready]
            raise KnfnError(f"not ready within {READY_TIMEOUT:.0f}s: {', '.join(waiting)}")
        await asyncio.sleep(0.05)
