"""The ``knfn`` command line: the group, ``knfn dev`` and the commands of knfn/commands/.

Every flag is bound to its env var in these modules (the edge) and nowhere else; each command
lives in the module of its concern (backing services, a running ``knfn dev``, load, project).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from knfn import ports
from knfn.backing import services
from knfn.commands import backing, load, project, running
from knfn.commands.common import (
    F,
    admin_port_option,
    gateway_port,
    handle_errors,
    pass_settings,
    say,
)
from knfn.logs import DEFAULT_PRINT, PrintFilter
from knfn.serving import budget
from knfn.settings import Settings
from knfn.statelock import StateLock


@click.group()
@click.option(
    "--project-dir",
    envvar="KNFN_PROJECT_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The repository to run (holds knative/, functions/, postgres/); state goes to .knfn/.",
)
@click.option(
    "--state-dir",
    envvar="KNFN_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where knfn keeps its data, logs and generated secrets [default: <project>/.knfn].",
)
@click.pass_context
@handle_errors
def main(ctx: click.Context, project_dir: Path, state_dir: Path | None) -> None:
    """knfn: the Knative function platform on one machine."""
    ctx.obj = Settings.load(project_dir, state_dir, os.environ)


for _command in (
    backing.services_group,
    backing.admin_group,
    running.status_command,
    running.invoke_command,
    running.logs_command,
    running.events_command,
    load.load_command,
    load.demo_command,
    project.new_command,
    project.check_command,
    project.reset,
):
    main.add_command(_command)


class LocalDuration(click.ParamType[float, Any]):
    """A local-only autoscaler setting (knfn/serving/autoscaler_config.py): a Go duration."""

    name = "duration"

    def __init__(self, variable: str) -> None:
        self.variable = variable

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        from knfn.serving import autoscaler_config

        try:
            return autoscaler_config.parse_local_override(self.variable, str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


class MemorySize(click.ParamType["budget.Reserve", Any]):
    """The memory reserve: a share of the machine's memory, or bytes (knfn/serving/budget.py)."""

    name = "size"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> budget.Reserve:

        if isinstance(value, budget.Reserve):
            return value
        try:
            return budget.Reserve.parse(str(value))
        except budget.BudgetError as exc:
            self.fail(str(exc), param, ctx)


def local_autoscaler_option(flag: str, variable: str, example: str, what: str) -> Callable[[F], F]:
    return click.option(
        flag,
        envvar=variable,
        show_envvar=True,
        type=LocalDuration(variable),
        default=None,
        help=f"Local only, never in a cluster: {what} (e.g. {example}) "
        "[default: config-autoscaler's].",
    )


def _print_filter(ctx: click.Context, param: click.Parameter, value: str) -> PrintFilter:
    try:
        return PrintFilter.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


print_option = click.option(
    "--print",
    "print_filter",
    envvar="KNFN_PRINT",
    show_envvar=True,
    metavar="SERVICES",
    default=DEFAULT_PRINT,
    show_default=True,
    callback=_print_filter,
    help="Whose lines to print besides knfn's own: Service names separated by commas, `all` "
    "or `none`. Every line still goes to the log files (`knfn logs SERVICE`).",
)


@main.command("dev")
@gateway_port
@admin_port_option
@click.option("--watch", is_flag=True, help="Make a new revision when code or manifests change.")
@click.option(
    "--dispatchers",
    envvar="KNFN_DISPATCHERS",
    type=click.IntRange(1, 64),
    default=None,
    help="Broker dispatcher processes claiming deliveries in parallel, beside the gateway "
    "[default: one per two cores, 1 to 4] (env KNFN_DISPATCHERS).",
)
@click.option(
    "--shutdown-timeout",
    envvar="KNFN_SHUTDOWN_TIMEOUT",
    type=click.FloatRange(1, 3600),
    default=30.0,
    show_default=True,
    help="Seconds a graceful stop may take before it is forced (env KNFN_SHUTDOWN_TIMEOUT).",
)
@click.option(
    "--max-event-bytes",
    envvar="KNFN_MAX_EVENT_BYTES",
    type=click.IntRange(1024, 64 * 1024 * 1024),
    default=1024 * 1024,
    show_default=True,
    help="The largest request body the broker ingress takes; larger gets 413 "
    "(env KNFN_MAX_EVENT_BYTES).",
)
@click.option(
    "--replica-start",
    envvar="KNFN_REPLICA_START",
    type=click.Choice(["fork", "spawn"]),
    default="fork",
    show_default=True,
    help="fork: replicas are forks of a template per revision that has imported the function "
    "(Linux); spawn: a new functions-framework process each (env KNFN_REPLICA_START).",
)
@click.option(
    "--memory-reserve",
    envvar="KNFN_MEMORY_RESERVE",
    show_envvar=True,
    type=MemorySize(),
    default="10%",
    show_default=True,
    help="Memory kept free: replicas start while MemAvailable stays above it (a percentage of "
    "memory, or 512Mi, 2Gi...). A request to a revision at zero always gets its first replica.",
)
@click.option(
    "--max-replicas",
    envvar="KNFN_MAX_REPLICAS",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=None,
    help="A cap on replicas in all, on top of the memory budget [default: none].",
)
@click.option(
    "--max-replicas-per-revision",
    envvar="KNFN_MAX_REPLICAS_PER_REVISION",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=None,
    help="A cap on the replicas of each revision, below its max-scale [default: none].",
)
@click.option(
    "--allow-not-ready-triggers",
    envvar="KNFN_ALLOW_NOT_READY_TRIGGERS",
    is_flag=True,
    help="Start even when a Trigger names a Broker, subscriber or dead-letter sink that is not "
    "in the manifests, as the cluster does: it gets no events and /status lists it under "
    "not_ready_triggers [default: stop with an error] (env KNFN_ALLOW_NOT_READY_TRIGGERS).",
)
@local_autoscaler_option(
    "--autoscaler-stable-window", "KNFN_AUTOSCALER_STABLE_WINDOW", "6s",
    "the stable window, whole seconds, may go below upstream's 6s",
)  # fmt: skip
@local_autoscaler_option(
    "--autoscaler-scale-to-zero-grace", "KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE", "0s",
    "the scale-to-zero grace period, may be zero",
)  # fmt: skip
@local_autoscaler_option(
    "--autoscaler-tick", "KNFN_AUTOSCALER_TICK", "500ms", "how often the autoscaler decides"
)
@print_option
@pass_settings
@handle_errors
def dev_command(
    settings: Settings,
    port: int,
    admin_port: int,
    watch: bool,
    dispatchers: int | None,
    shutdown_timeout: float,
    max_event_bytes: int,
    replica_start: str,
    memory_reserve: budget.Reserve,
    max_replicas: int | None,
    max_replicas_per_revision: int | None,
    allow_not_ready_triggers: bool,
    autoscaler_stable_window: float | None,
    autoscaler_scale_to_zero_grace: float | None,
    autoscaler_tick: float | None,
    print_filter: PrintFilter,
) -> None:
    """Run the whole system: backing services, admin processes, every Service, the gateway.

    Prints knfn's own lines and, by default, event-display's (--print chooses the Services);
    every line of every replica is kept under <state dir>/logs/, read with `knfn logs SERVICE`.
    """
    # Checked before anything starts, so a clash costs one line and leaves nothing running:
    # the state directory is ours alone, the gateway and admin ports are bound (and so kept)
    # now, and explicit backing-service ports are free or held by our own servers.
    lock = StateLock.acquire(settings.state_dir, "dev")
    listeners = ports.bind_listeners(
        {"gateway (--port/KNFN_PORT)": port, "admin API (--admin-port/KNFN_ADMIN_PORT)": admin_port}
    )
    services.preflight(settings.backing)
    # The backing servers start now, before the imports below: SeaweedFS takes about 2 s of its
    # own before it serves S3 (the longest step of a start), so the rest overlaps it. From
    # dev.run on, the run stops them; until then, a failure here does.
    started = services.Startup(settings.backing, say, services.DEV)
    try:
        import uvloop

        from knfn import dev
        from knfn.eventing.worker import default_processes
        from knfn.logfiles import LogFiles
        from knfn.logs import Printer
        from knfn.serving import autoscaler_config

        options = dev.DevOptions(
            port, admin_port, watch, dict(os.environ),
            dispatchers or default_processes(os.cpu_count()), shutdown_timeout, max_event_bytes,
            listeners=listeners, replica_start=replica_start,
            caps=budget.Caps(max_replicas_per_revision, max_replicas, memory_reserve),
            allow_not_ready_triggers=allow_not_ready_triggers,
            autoscaler=autoscaler_config.LocalOverrides(
                autoscaler_stable_window, autoscaler_scale_to_zero_grace, autoscaler_tick
            ),
        )  # fmt: skip
        files = LogFiles(settings.state_dir / "logs")
    except BaseException:
        started.settle()
        services.down(settings.backing, started.started())
        raise
    say(f"printing knfn's lines and {print_filter.describe()} (--print); every line goes to "
        f"{files.root}, read with `knfn logs SERVICE`")  # fmt: skip
    try:
        uvloop.run(dev.run(settings, options, Printer(files=files, shows=print_filter), started))
    finally:
        files.close()
        lock.release()


@main.command("dispatch-worker", hidden=True)
@click.option("--slot", type=int, required=True)
@click.option("--gateway", required=True)
@click.option("--total", type=click.IntRange(min=1), required=True)
@click.option("--per-destination", type=click.IntRange(min=1), required=True)
@click.option("--batch", type=click.IntRange(min=1), required=True)
@click.option("--database-url", envvar="KNFN_DISPATCH_DATABASE_URL", required=True)
@handle_errors
def dispatch_worker_command(
    slot: int, gateway: str, total: int, per_destination: int, batch: int, database_url: str
) -> None:
    """One broker dispatcher process, started and stopped by `knfn dev` (internal)."""
    from knfn.eventing import worker
    from knfn.eventing.dispatcher import Limits

    limits = Limits(total=total, per_destination=per_destination, batch=batch)
    worker.main(worker.WorkerOptions(slot, gateway, database_url, limits))


if __name__ == "__main__":
    main()
