"""The ``knfn`` command line: every flag bound to its env var here, and nowhere else."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from knfn import ports
from knfn.backing import services
from knfn.errors import KnfnError
from knfn.logs import DEFAULT_PRINT, PrintFilter
from knfn.serving import budget
from knfn.settings import Settings
from knfn.statelock import StateLock

F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    click.echo(f"knfn: {message}", err=True)


def handle_errors(fn: F) -> F:
    """Translate KnfnError into a one-paragraph message and its exit code (the one boundary)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KnfnError as exc:
            click.echo(f"knfn: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


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


pass_settings = click.make_pass_decorator(Settings)

# The two ports every command that talks to a running `knfn dev` shares, bound once.
gateway_port = click.option(
    "--port",
    envvar="KNFN_PORT",
    type=int,
    default=8080,
    show_default=True,
    help="The gateway's port (env KNFN_PORT).",
)
admin_port_option = click.option(
    "--admin-port",
    envvar="KNFN_ADMIN_PORT",
    type=int,
    default=8081,
    show_default=True,
    help="The admin API's port on 127.0.0.1: /status, /metrics, /events (env KNFN_ADMIN_PORT).",
)


@main.group("services")
def services_group() -> None:
    """Run the backing services (Postgres, S3) on their own."""


@services_group.command("up")
@click.option(
    "--show-secrets", is_flag=True, help="Print passwords and secret keys instead of ***."
)
@pass_settings
@handle_errors
def services_up(settings: Settings, show_secrets: bool) -> None:
    """Start Postgres and S3 (unless external), detached; print how to reach them."""
    with StateLock.acquire(settings.state_dir, "services up"):
        services.preflight(settings.backing)
        env = services.up(settings.backing, report=say)
    for name in env.started:
        say(f"started {name}")
    printed = env.function_env()
    if not show_secrets:
        printed = services.redacted_env(printed)
        say(f"secrets are kept in {settings.state_dir} (--show-secrets prints them)")
    _print_env(printed)


@services_group.command("down")
@pass_settings
@handle_errors
def services_down(settings: Settings) -> None:
    """Stop the services that knfn started."""
    with StateLock.acquire(settings.state_dir, "services down"):
        stopped = services.down(settings.backing)
    say("stopped " + (", ".join(stopped) if stopped else "nothing (none were running)"))


@services_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_settings
@handle_errors
def services_status(settings: Settings, as_json: bool) -> None:
    """Show each service: running, stopped or external, with URL, pid and log."""
    rows = services.status(settings.backing)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    for r in rows:
        detail = f"pid {r.pid}" if r.pid else ""
        click.echo(f"{r.name:<9} {r.state:<9} {r.kind:<18} {r.url:<48} {detail}".rstrip())


@main.group("admin")
def admin_group() -> None:
    """One-off admin processes (factor 12), the same ones the cluster's Jobs run."""


def _running_backing(settings: Settings) -> services.BackingEnv:
    found = services.find(settings.backing)
    if found is None:
        raise KnfnError(
            "the backing services are not running: start them with `knfn services up` "
            "(or `knfn dev`), or point DATABASE_URL / S3_ENDPOINT_URL at external ones"
        )
    return found


@admin_group.command("migrate")
@pass_settings
@handle_errors
def admin_migrate(settings: Settings) -> None:
    """Apply postgres/migrations/*.sql in order; already applied ones are skipped."""
    from knfn import admin

    applied = admin.migrate(settings, _running_backing(settings))
    click.echo(f"applied {len(applied)} migration(s)" + _listed(applied))


@admin_group.command("buckets")
@click.option(
    "--bucket",
    "names",
    envvar="S3_BUCKET",
    multiple=True,
    default=("uploads",),
    show_default=True,
    help="Bucket to create (repeat for several); env S3_BUCKET.",
)
@pass_settings
@handle_errors
def admin_buckets(settings: Settings, names: tuple[str, ...]) -> None:
    """Create the configured S3 buckets that do not exist yet."""
    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    from knfn import admin

    created = admin.buckets(_running_backing(settings), wanted)
    click.echo(f"created {len(created)} bucket(s)" + _listed(created))


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


@main.command("new")
@click.argument("name")
@click.option(
    "--template",
    type=click.Choice(["http", "cloudevent"]),
    required=True,
    help="http: answers GET; cloudevent: a consumer behind a Trigger on the default broker.",
)
@click.option(
    "--type",
    "event_type",
    default=None,
    metavar="TYPE",
    help="cloudevent only: the type its Trigger filters on [default: dev.knfn.NAME.requested].",
)
@pass_settings
@handle_errors
def new_command(settings: Settings, name: str, template: str, event_type: str | None) -> None:
    """Create functions/NAME and its manifests, listed in knative/base/kustomization.yaml."""
    from knfn import scaffold

    made = scaffold.plan(settings.project_dir, name, template, event_type)
    scaffold.write(settings.project_dir, made)
    click.echo(scaffold.summary(made))


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


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON of /status.")
@admin_port_option
@handle_errors
def status_command(as_json: bool, admin_port: int) -> None:
    """Services and revisions of a running `knfn dev`: traffic, desired and ready replicas."""
    from knfn import status

    data = status.fetch(admin_port)
    click.echo(json.dumps(data, indent=2) if as_json else status.table(data))


@main.command("invoke")
@click.argument("target")
@gateway_port
@click.option("-X", "--method", help="[default: GET; POST with --data, --event or a broker]")
@click.option("--path", help="Path (and query) on a Service [default: /].")
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Repeatable."
)
@click.option("-d", "--data", metavar="TEXT|@FILE|@-", help="The body: text, a file or stdin.")
@click.option("--content-type", help="[default: from the file name, else JSON, text or bytes]")
@click.option("--event", is_flag=True, help="Send a CloudEvent (POST, binary mode).")
@click.option("--type", "type_", metavar="TYPE", help="The event's type (with --event).")
@click.option("--source", help="The event's source (with --event).")
@click.option("--id", "event_id", metavar="ID", help="The event's id [default: a new UUID].")
@click.option("--subject", help="The event's subject.")
@click.option("--extension", "extensions", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@click.option("--structured", is_flag=True, help="Structured mode (application/cloudevents+json).")
@click.option("-q", "--quiet", is_flag=True, help="Print the body only.")
@click.option("-v", "--verbose", is_flag=True, help="Print the request's headers on stderr.")
@click.option(
    "--timeout",
    envvar="KNFN_INVOKE_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the answer, a cold start included (env KNFN_INVOKE_TIMEOUT).",
)
@handle_errors
def invoke_command(
    target: str,
    port: int,
    method: str | None,
    path: str | None,
    headers: tuple[str, ...],
    data: str | None,
    content_type: str | None,
    event: bool,
    type_: str | None,
    source: str | None,
    event_id: str | None,
    subject: str | None,
    extensions: tuple[str, ...],
    structured: bool,
    quiet: bool,
    verbose: bool,
    timeout: float,
) -> None:
    """Send an HTTP request or a CloudEvent to a Service or a broker through the gateway.

    TARGET is a Service (hello, hello.default, http://hello.default.svc.cluster.local/path) or
    a broker (broker:default, broker:<namespace>/<name>, or its URL). Prints the status line,
    the headers and the body; exits 0 for a 2xx answer, 1 otherwise, 2 for a usage error.
    """
    from functools import partial

    from knfn import invoke

    payload = invoke.read_data(data, sys.stdin.buffer) if data is not None else None
    options = invoke.Options(
        target=target, port=port, method=method, path=path, headers=headers, data=payload,
        content_type=content_type, event=event, type=type_, source=source, id=event_id,
        subject=subject, extensions=extensions, structured=structured,
    )  # fmt: skip
    out, err = partial(click.echo, nl=False), partial(click.echo, err=True)
    sys.exit(invoke.run(options, timeout=timeout, quiet=quiet, verbose=verbose, out=out, err=err))


@main.command("logs")
@click.argument("service")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they come.")
@click.option("--revision", metavar="REVISION", help="Only this revision's lines.")
@click.option(
    "-n",
    "--tail",
    "lines",
    type=click.IntRange(min=-1),
    default=-1,
    show_default=True,
    help="Lines to show from the end of the log; -1: all.",
)
@click.option("--timestamps", is_flag=True, help="Start each line with its time (UTC).")
@pass_settings
@handle_errors
def logs_command(
    settings: Settings,
    service: str,
    follow: bool,
    revision: str | None,
    lines: int,
    timestamps: bool,
) -> None:
    """Print a Service's log lines, as `knfn dev` keeps them (like `kubectl logs`).

    Reads <state dir>/logs/services/SERVICE.log (and the rotated SERVICE.log.1); knfn's own
    lines are in <state dir>/logs/knfn.log.
    """
    from knfn import logfiles

    try:
        logfiles.show(
            settings.state_dir / "logs", service, click.echo, revision=revision,
            lines=None if lines < 0 else lines, follow=follow, timestamps=timestamps,
            tty=sys.stdout.isatty(),
        )  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(130)


@main.command("events")
@admin_port_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing deliveries as they happen.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="How many of the latest deliveries to print first.",
)
@handle_errors
def events_command(admin_port: int, follow: bool, limit: int) -> None:
    """The broker's deliveries of a running `knfn dev`, one line each: time, event id, type,
    trigger, state, status, attempts and latency (a line again when a delivery changes)."""
    from knfn import deliveries

    try:
        deliveries.run(
            lambda n: deliveries.fetch(admin_port, n), click.echo, limit=limit, follow=follow
        )
    except KeyboardInterrupt:
        sys.exit(130)


class Seconds(click.ParamType[float, Any]):
    """A duration: a Go duration (30s, 1m30s, 500ms) or a number of seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        from knfn.serving.autoscaler_config import parse_duration

        text = str(value).strip()
        try:
            seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        if seconds < 0:
            self.fail(f"{value!r}: a duration cannot be negative", param, ctx)
        return seconds


class ErrorBudget(click.ParamType[float, Any]):
    """--max-errors: a fraction (0.01) or a percentage (1%)."""

    name = "fraction"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        from knfn.load.stats import parse_error_budget

        try:
            return parse_error_budget(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command("load")
@click.argument("service")
@gateway_port
@admin_port_option
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Closed loop: this many clients, each sending again as soon as it is answered.",
)
@click.option(
    "--rps",
    type=click.FloatRange(min=0, min_open=True, max=100_000),
    default=None,
    help="Open loop instead: this many requests a second at fixed times, answered or not; "
    "latency counts from each request's due time.",
)
@click.option(
    "-d",
    "--duration",
    type=Seconds(),
    default="30s",
    show_default=True,
    help="How long to send (30s, 1m, 500ms, or seconds).",
)
@click.option("--path", help="Path (and query) on the Service [default: /].")
@click.option("-X", "--method", help="[default: GET; POST with --data]")
@click.option("--data", metavar="TEXT|@FILE|@-", help="The body of every request.")
@click.option(
    "--host",
    metavar="HOST",
    help="Route by this host instead, e.g. a tag's: candidate-hello.default.",
)
@click.option(
    "--timeout",
    envvar="KNFN_LOAD_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a request may take, a cold start included (env KNFN_LOAD_TIMEOUT).",
)
@click.option(
    "--max-errors",
    envvar="KNFN_LOAD_MAX_ERRORS",
    type=ErrorBudget(),
    default="1%",
    show_default=True,
    help="Exit 1 when more than this share of requests fail (4xx, 5xx, no answer): 1% or "
    "0.01 (env KNFN_LOAD_MAX_ERRORS).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write DIR/load.csv (one row a second) and DIR/load.png (the plot).",
)
@click.option(
    "--tail",
    type=Seconds(),
    default="0s",
    show_default=True,
    help="After the load, keep recording replicas this long, or until the Service is at zero.",
)
@click.pass_context
@handle_errors
def load_command(
    ctx: click.Context,
    service: str,
    port: int,
    admin_port: int,
    concurrency: int,
    rps: float | None,
    duration: float,
    path: str | None,
    method: str | None,
    data: str | None,
    host: str | None,
    timeout: float,
    max_errors: float,
    out: Path | None,
    tail: float,
) -> None:
    """Put HTTP load on a Service and watch its revisions scale.

    SERVICE is named as for `knfn invoke` (hello, hello.default). While it runs: requests/s,
    answers by status, p50/p90/p99, and per revision desired and ready replicas, panic mode
    and cold starts from the admin API (one plain line a second without a terminal). Then a
    summary. Exits 0, or 1 when the error rate is above --max-errors.
    """
    from rich.console import Console

    from knfn import invoke
    from knfn.load import LoadUsageError, command, engine

    given = ctx.get_parameter_source("concurrency") is not click.core.ParameterSource.DEFAULT
    if rps is not None and given:
        raise LoadUsageError(
            "-c/--concurrency and --rps: choose a closed loop of N clients or an open loop "
            "at R requests a second, not both"
        )
    if duration <= 0:
        raise LoadUsageError(f"--duration {duration:g}: must be more than zero")
    payload = invoke.read_data(data, sys.stdin.buffer) if data is not None else None
    request = engine.build_request(
        service, port=port, method=method, path=path, data=payload, host=host
    )
    plan = engine.LoadPlan(
        request, duration, concurrency=concurrency, rps=rps, timeout=timeout,
        admin_port=admin_port, tail=tail,
    )  # fmt: skip
    output = command.Output(out) if out is not None else None
    _, verdict = command.run(plan, max_errors, output, Console())
    sys.exit(0 if verdict.ok else 1)


@main.command("demo")
@gateway_port
@admin_port_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where autoscale.csv and autoscale.png go [default: <state dir>/demo].",
)
@click.option(
    "--tail",
    type=Seconds(),
    default="240s",
    show_default=True,
    help="The longest the replicas are recorded after the load (it stops at zero).",
)
@pass_settings
@handle_errors
def demo_command(
    settings: Settings, port: int, admin_port: int, out: Path | None, tail: float
) -> None:
    """Knative's autoscale-go sample on hello: 50 clients for 30 s, then scale to zero.

    Uses the knfn dev answering on --admin-port, or starts one and stops it after. Prints
    the live view, then the summary, and writes the CSV and the plot.
    """
    from rich.console import Console

    from knfn.load import command, demo

    options = demo.DemoOptions(port, admin_port, out or settings.state_dir / "demo", tail)
    with demo.knfn_dev(settings, options, say):
        _, verdict = command.run(
            demo.plan(options), 0.01, command.Output(options.out, "autoscale"), Console()
        )
    sys.exit(0 if verdict.ok else 1)


@main.command("check")
@click.argument("names", metavar="[SERVICE]...", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of verdicts.")
@pass_settings
@handle_errors
def check_command(settings: Settings, names: tuple[str, ...], as_json: bool) -> None:
    """Check functions against the twelve factors (all Services by default): a verdict per
    factor, with evidence and fix. Starts each function as a replica; exits 1 on any fail."""
    from rich.console import Console

    from knfn import check
    from knfn.check import report

    try:
        verdicts = check.check(settings, names, check.CheckOptions(dict(os.environ)))
    except check.UnknownServices as exc:
        raise click.BadParameter(str(exc), param_hint="SERVICE") from exc
    if as_json:
        click.echo(report.as_json(verdicts))
    else:
        report.table(verdicts, Console())
    sys.exit(1 if check.failed(verdicts) else 0)


@main.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_settings
@handle_errors
def reset(settings: Settings, yes: bool) -> None:
    """Stop everything knfn started and delete .knfn/ (all local data)."""
    with StateLock.acquire(settings.state_dir, "reset"):
        if not yes:
            click.confirm(f"Delete {settings.state_dir} and all its data?", abort=True)
        services.down(settings.backing)
        shutil.rmtree(settings.state_dir, ignore_errors=True)
    say(f"removed {settings.state_dir}")


def _listed(names: list[str]) -> str:
    return ": " + ", ".join(names) if names else ""


def _print_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        click.echo(f"{key}={value}")


if __name__ == "__main__":
    main()
