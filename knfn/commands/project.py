"""``knfn new``, ``knfn check`` and ``knfn reset``: the project's functions and its local state."""

from __future__ import annotations

import os
import shutil
import sys

import click

from knfn.backing import services
from knfn.commands.common import (
    handle_errors,
    pass_settings,
    say,
)
from knfn.settings import Settings
from knfn.statelock import StateLock


@click.command("new")
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


@click.command("check")
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


@click.command("reset")
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
