"""What every command shares: the error boundary, the project settings and the two ports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from knfn.errors import KnfnError
from knfn.settings import Settings

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
