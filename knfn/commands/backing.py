"""``knfn services`` and ``knfn admin``: the backing services and the one-off admin processes."""

from __future__ import annotations

import json

import click

from knfn.backing import services
from knfn.commands.common import (
    handle_errors,
    pass_settings,
    say,
)
from knfn.errors import KnfnError
from knfn.settings import Settings
from knfn.statelock import StateLock


@click.group("services")
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


@click.group("admin")
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


def _listed(names: list[str]) -> str:
    return ": " + ", ".join(names) if names else ""


def _print_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        click.echo(f"{key}={value}")
