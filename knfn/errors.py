"""The one exception base of knfn; the CLI turns it into a message and an exit code."""

from __future__ import annotations


class KnfnError(Exception):
    """Something the user can act on; the message says what and where."""

    exit_code: int = 1


class BackingError(KnfnError):
    """A backing service (Postgres, S3) could not be started, reached or stopped."""


class PortInUseError(BackingError):
    """A port that was asked for explicitly is taken."""
