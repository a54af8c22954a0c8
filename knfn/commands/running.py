"""Commands that talk to a running ``knfn dev``: status, invoke, logs, events."""

from __future__ import annotations

import json
import sys

import click

from knfn.commands.common import (
    admin_port_option,
    gateway_port,
    handle_errors,
    pass_settings,
)
from knfn.settings import Settings


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON of /status.")
@admin_port_option
@handle_errors
def status_command(as_json: bool, admin_port: int) -> None:
    """Services and revisions of a running `knfn dev`: traffic, desired and ready replicas."""
    from knfn import status

    data = status.fetch(admin_port)
    click.echo(json.dumps(data, indent=2) if as_json else status.table(data))


@click.command("invoke")
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


@click.command("logs")
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


@click.command("events")
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
