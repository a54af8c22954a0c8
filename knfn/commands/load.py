"""``knfn load`` and ``knfn demo``: load a Service and watch it scale."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from knfn.commands.common import (
    admin_port_option,
    gateway_port,
    handle_errors,
    pass_settings,
    say,
)
from knfn.settings import Settings


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


@click.command("load")
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


@click.command("demo")
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
