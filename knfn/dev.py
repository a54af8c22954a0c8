"""``knfn dev``: the whole system on one machine, up in order and down in reverse.

Start-up, each step as soon as what it needs is there, not later: 1. backing services (or the
external ones): Postgres and S3 at once, 2. migrations (once Postgres is up) and buckets (once
S3 is), the admin processes, beside 3. Serving: a revision per Service and its initial replicas
(they import their function while the rest starts), 4. Eventing, after the migrations: the
broker's store and dispatchers, 5. after the buckets, the gateway (with the broker ingress) and
the admin API, 6. the autoscaler loop, the backing services' supervisor (and, with --watch, the
watcher). Ready once every Service's first revision is.

Shutdown (:func:`shut_down`) is one owner running numbered steps under one deadline: 1. stop
accepting events (the broker ingress and flows answer 503), 2. stop the dispatchers (attempts in
flight may end; the rest are released, never counted as failed), 3. drain the gateway and the
admin API (no new connections; requests in flight finish), 4. stop the replicas (SIGTERM, grace,
SIGKILL), 5. stop the backing services this run started, 6. reap exited children. Signal
handlers only set events: the first SIGINT/SIGTERM asks for this, a second (or the deadline)
forces it: waits are cut short and replicas killed. Every step runs even when one before it
failed; the failures are reported together at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from knfn import admin, admin_api, manifests, metrics, server, watch
from knfn.backing import services
from knfn.backing.supervise import supervise
from knfn.errors import KnfnError
from knfn.eventing import config as eventing_config
from knfn.eventing.runtime import Eventing
from knfn.eventing.worker import DispatchOptions
from knfn.gateway import Gateway
from knfn.logs import Printer
from knfn.serving import autoscaling, template, template_root
from knfn.serving.autoscaler_config import (
    AutoscalerConfig,
    AutoscalingError,
    LocalOverrides,
    with_local_overrides,
)
from knfn.serving.budget import Caps
from knfn.serving.context import Context
from knfn.serving.kpa import Autoscaler
from knfn.serving.replica import Replica
from knfn.serving.replica_env import SecretValues
from knfn.serving.replica_records import ReplicaRecords
from knfn.serving.revision import RevisionStore
from knfn.serving.runtime import Serving
from knfn.serving.template_root import TemplateRoot
from knfn.settings import Settings

READY_TIMEOUT = 90.0
# Shutdown: attempts in flight may end within this; then they are cut short and released.
DELIVERY_GRACE = 10.0
# A forced step (second signal, or the deadline) is given this long before it is abandoned.
FORCED_WAIT = 5.0


@dataclass(frozen=True)
class DevOptions:
    port: int
    admin_port: int
    watch: bool
    host_env: Mapping[str, str]
    dispatchers: int = 1  # dispatcher processes (knfn/eventing/worker.py)
    shutdown_timeout: float = 30.0
    max_event_bytes: int = 1024 * 1024
    # Ports the CLI already bound (so a busy one failed before anything started), by port.
    listeners: Mapping[int, socket.socket] = field(default_factory=dict)
    replica_start: str = "fork"  # or "spawn": no templates (knfn/serving/template.py)
    caps: Caps = field(default_factory=Caps)  # the replica budget (knfn/serving/budget.py)
    autoscaler: LocalOverrides = field(default_factory=LocalOverrides)
    allow_not_ready_triggers: bool = False  # knfn/eventing/config.py


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


def autoscaler_config(m: manifests.Manifests, overrides: LocalOverrides) -> AutoscalerConfig:
    """config-autoscaler from the manifests (as in the cluster), then the local-only overrides."""
    data = m.config_maps.get(("knative-serving", "config-autoscaler"), {})
    try:
        cfg = AutoscalerConfig.from_configmap(data)
        return with_local_overrides(cfg, overrides)
    except AutoscalingError as exc:
        raise KnfnError(f"ConfigMap knative-serving/config-autoscaler: {exc}") from exc


async def run(
    settings: Settings,
    options: DevOptions,
    say: Printer,
    started: services.Startup | None = None,
) -> None:
    """Bring everything up, serve until SIGINT/SIGTERM, then shut down in reverse.

    started: the backing services' start when the caller began it already (the CLI does, before
    its heavy imports); from here on this run stops what it started, whatever happens.
    """
    loop = asyncio.get_running_loop()
    try:
        m = manifests.load(settings.knative_dir, settings.functions_dir)
        brokers = eventing_config.load(m, options.allow_not_ready_triggers)
        scaler_cfg = autoscaler_config(m, options.autoscaler)
    except BaseException:
        if started is not None:
            await loop.run_in_executor(None, _backing_down, settings, started)
        raise
    for warning in m.warnings:
        say.line("knfn", f"warning: {warning}")
    for t in brokers.not_ready:
        say.line("knfn", f"Trigger {t.namespace}/{t.name} not ready ({t.reason}): {t.message}")

    signals = Signals()
    stop = signals.stop
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.received)
    halt = asyncio.Event()  # the background loops run on until the replicas are stopped
    report = lambda message: say.line("knfn", message)  # noqa: E731

    # 0. The root template starts importing what every revision's template shares, beside
    #    everything else (knfn/serving/template_root.py).
    root = _template_root(settings, options, say)

    # 1. Backing services, both at once (blocking calls: run off the loop). Serving needs
    #    Postgres (revision history, broker queues); S3 only has to be up before knfn is ready:
    #    the functions connect when they serve, and the buckets step waits for it.
    try:
        startup = started
        if startup is None:
            startup = await loop.run_in_executor(
                None, services.Startup, settings.backing, report, services.DEV
            )
    except BaseException:
        if root is not None:
            await root.stop()
        raise

    serving: Serving | None = None
    eventing: Eventing | None = None
    runners: list[web.AppRunner] = []
    background: list[asyncio.Task[None]] = []
    admin_steps: list[asyncio.Future[None]] = []
    try:
        await loop.run_in_executor(None, startup.postgres)
        if "postgres" in startup.started():
            say.line("knfn", "started postgres")
        # S3 at the port it is starting on (a port taken meanwhile moves it: see step 5).
        backing = startup.env(startup.s3_planned)

        # 2. Admin processes, as the cluster's Jobs would run them, beside Serving's start:
        #    the migrations need Postgres only, the buckets S3.
        async def migrate() -> None:
            applied = await loop.run_in_executor(None, admin.migrate, settings, backing)
            say.line("knfn", f"migrations applied: {len(applied)}")

        async def buckets() -> None:
            await loop.run_in_executor(None, startup.s3)
            if "s3" in startup.started():
                say.line("knfn", "started s3")
            names = configured_buckets(m)
            created = await loop.run_in_executor(None, admin.buckets, startup.env(), names)
            say.line("knfn", f"buckets created: {len(created)}")

        admin_steps = [asyncio.ensure_future(migrate()), asyncio.ensure_future(buckets())]

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
            values=_secret_values(backing, options, settings),
            proxy_url=f"http://127.0.0.1:{options.port}",
            host_env=options.host_env,
            argv=(str(Path(sys.executable).parent / "functions-framework"),),
            new_decider=lambda svc: Autoscaler(
                autoscaling.resolve_revision_scaling(
                    svc.annotations, svc.container_concurrency, scaler_cfg
                )
            ),
            caps=options.caps,
            functions_dir=settings.functions_dir,
            new_replica=lambda spec: Replica(spec, say, records),
            records=records,
            templates=options.replica_start == "fork" and template.supported(),
            template_root=root,
        )
        serving = Serving(ctx, m)
        metrics.KNATIVE_AUTOSCALER.watch(serving.autoscaling)
        await serving.apply(m)

        # 4. Eventing, once the schema is there: deliveries go through the gateway, so a
        #    function at zero is started.
        await admin_steps[0]
        eventing = Eventing(
            backing.knfn_database_url,
            brokers,
            m,
            f"http://127.0.0.1:{options.port}",
            lambda message: say.line("knfn", message),
            DispatchOptions(options.dispatchers, host_env=options.host_env),
            max_event_bytes=options.max_event_bytes,
        )
        await eventing.start()

        # 5. Once S3 is up and has its buckets (until then, deliveries wait on the gateway's
        #    bound socket), the gateway (with the broker ingress at its Knative address) and
        #    the admin API.
        await admin_steps[1]
        if (moved := startup.env()).s3_endpoint_url != backing.s3_endpoint_url:
            # Its port was taken while it started (another knfn starting beside this one):
            # the functions were given the old address, so they start again with the new one.
            say.line("knfn", f"s3 moved to {moved.s3_endpoint_url}: restarting the functions")
            await serving.stop()
            backing = moved
            serving = Serving(replace(ctx, values=_secret_values(backing, options, settings)), m)
            await serving.apply(m)
        gateway = Gateway(serving.route, serving.known_hosts, eventing.local)
        admin_app = admin_api.build(_status(serving, eventing), eventing)
        for app, port in ((gateway.app, options.port), (admin_app, options.admin_port)):
            # Header read timeout, JSON parse errors (knfn/server.py); the sockets bound by the
            # CLI before anything started, when it bound them.
            runners.append(
                await server.serve(
                    app,
                    port,
                    sock=options.listeners.get(port),
                    shutdown_timeout=options.shutdown_timeout,
                )
            )

        # 6. The autoscaler loop, the backing services' supervisor, and the watcher.
        background.append(asyncio.create_task(serving.run(scaler_cfg.tick_interval, halt)))
        background.append(asyncio.create_task(supervise(settings.backing, report, halt)))
        if options.watch:
            background.append(
                asyncio.create_task(watch.run(settings, serving, eventing, say, halt))
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
        # An admin step cut short by an earlier failure: not left pending (nor its error unread).
        for step in admin_steps:
            if step.done() and not step.cancelled():
                step.exception()
            step.cancel()
        await shut_down(
            Teardown(say, signals.force, options.shutdown_timeout),
            eventing=eventing,
            runners=runners,
            background=(halt, background),
            serving=serving,
            backing_down=lambda: loop.run_in_executor(None, _backing_down, settings, startup),
            root=root,
        )


def _template_root(settings: Settings, options: DevOptions, say: Printer) -> TemplateRoot | None:
    """The root template, started now; None when replicas are spawned (no templates)."""
    if options.replica_start != "fork" or not template.supported():
        return None
    root = TemplateRoot(
        template_root.root_env(options.host_env),
        template_root.requirement_files(settings.functions_dir),
        settings.state_dir / "run" / "template-root",
        say,
    )
    root.start()
    return root


def _secret_values(
    backing: services.BackingEnv, options: DevOptions, settings: Settings
) -> SecretValues:
    """What the functions' Secrets hold: the backing services' addresses and keys."""
    return SecretValues(
        backing.function_env(), options.host_env, settings.state_dir / "secrets.json"
    )


def _backing_down(settings: Settings, startup: services.Startup) -> list[str]:
    """Stop what this run started, once neither server is still starting (or one started
    after this would be left running)."""
    startup.settle()
    return services.down(settings.backing, startup.started())


class Signals:
    """SIGINT/SIGTERM: the first asks for a graceful stop, a second forces it. The handler only
    sets events; the shutdown loop acts on them."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def received(self) -> None:
        (self.force if self.stop.is_set() else self.stop).set()


class Teardown:
    """Runs shutdown steps in order under one deadline, collecting their failures.

    A step is given its time until ``force`` is set (a second signal, or the deadline); then its
    forced variant runs (kill instead of wait) and the step gets :data:`FORCED_WAIT` more before
    it is abandoned. A step that fails never keeps the next one from running.
    """

    def __init__(
        self,
        say: Printer,
        force: asyncio.Event,
        deadline: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.say = say
        self.force = force
        self._clock = clock or asyncio.get_running_loop().time
        self._deadline = self._clock() + deadline
        self.errors: list[str] = []
        self._timer = asyncio.get_running_loop().call_later(deadline, self._expire, deadline)

    def _expire(self, deadline: float) -> None:
        if not self.force.is_set():
            self.say.line("knfn", f"shutdown: not done within {deadline:g}s; forcing")
            self.force.set()

    def left(self) -> float:
        """Seconds before the deadline (0 once forced)."""
        return 0.0 if self.force.is_set() else max(0.0, self._deadline - self._clock())

    async def step(
        self,
        name: str,
        graceful: Callable[[], Awaitable[object]],
        forced: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.say.line("knfn", f"shutdown: {name}")
        task = asyncio.ensure_future(graceful())
        forcing = asyncio.ensure_future(self.force.wait())
        try:
            await asyncio.wait({task, forcing}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                if forced is not None:
                    try:
                        await forced()
                    except Exception as exc:
                        self.errors.append(f"{name} (forced): {exc.__class__.__name__}: {exc}")
                await asyncio.wait({task}, timeout=FORCED_WAIT)
        finally:
            forcing.cancel()
        if not task.done():
            task.cancel()
            self.errors.append(f"{name}: abandoned after being forced")
        elif not task.cancelled() and (failure := task.exception()) is not None:
            self.errors.append(f"{name}: {failure.__class__.__name__}: {failure}")

    def close(self) -> None:
        self._timer.cancel()


async def shut_down(
    teardown: Teardown,
    *,
    eventing: Eventing | None,
    runners: list[web.AppRunner],
    background: tuple[asyncio.Event, list[asyncio.Task[None]]],
    serving: Serving | None,
    backing_down: Callable[[], Awaitable[object]],
    root: TemplateRoot | None = None,
) -> None:
    """The shutdown steps, in order; raises KnfnError naming every step that failed."""
    say = teardown.say
    say.line("knfn", "shutting down")

    # 1. Accept nothing more: the broker ingress and flows answer 503 (the gateway still serves
    # Services, so deliveries in flight can finish).
    if eventing is not None:
        say.line("knfn", "shutdown: 1. stop accepting events")
        eventing.drain()

    # 2. Dispatchers stop claiming; attempts in flight end within the grace, the rest are cut
    # short and released (their attempt not counted), so nothing accepted is lost.
    if eventing is not None:
        ev = eventing

        async def stop_eventing() -> None:
            grace = min(DELIVERY_GRACE, teardown.left())
            released = await ev.stop(grace, teardown.force)
            say.line("knfn", f"shutdown: {released} delivery attempt(s) released for the next run")

        async def cut() -> None:
            ev.cut()

        await teardown.step("2. stop dispatchers", stop_eventing, cut)

    # 3. The gateway and the admin API: no new connections; requests in flight finish.
    async def drain_gateway() -> None:
        for runner in runners:
            await runner.cleanup()

    await teardown.step("3. drain gateway", drain_gateway)

    # 4. Background loops end, then the replicas drain (SIGTERM, grace, SIGKILL; forced: SIGKILL).
    halt, tasks = background
    halt.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if serving is not None:
        sv = serving

        async def kill_replicas() -> None:
            await sv.stop(grace=0)

        await teardown.step("4. stop replicas", sv.stop, kill_replicas)
    if root is not None:  # after the templates it forked (their replicas' stop needs them)
        await root.stop()

    # 5. Backing services this run started (ones already running are left running).
    await teardown.step("5. stop backing services", backing_down)

    # 6. Reap whatever child has exited and not been waited for (no zombie outlives knfn).
    _reap_children()
    teardown.close()
    for error in teardown.errors:
        say.line("knfn", f"shutdown error: {error}")
    say.line("knfn", "stopped")
    if teardown.errors:
        raise KnfnError(f"shutdown finished with {len(teardown.errors)} error(s): "
                        + "; ".join(teardown.errors))  # fmt: skip


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


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
