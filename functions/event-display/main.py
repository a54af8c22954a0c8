"""event-display: log every CloudEvent it receives, as one structured JSON line.

The debugging sink of the pipeline: point a Trigger (or a Source's sink) at it and read the
events in its logs. Each line carries all attributes, the extensions, and the data, decoded
as JSON when it is JSON, as text when it is UTF-8, otherwise as base64 (`data_encoding`
says which). Every event is acknowledged with an empty 204.
"""

from __future__ import annotations

from dataclasses import dataclass

import kit
from cloudevents.http import CloudEvent
from kit import config, handlers
from kit import logging as kit_logging


@dataclass(frozen=True)
class Settings:
    """What event-display reads from its environment."""

    log: kit_logging.LogSettings


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
log = kit_logging.get_logger("event-display")


@kit.cloudevent_function
def display(event: CloudEvent) -> CloudEvent | None:
    """Log the event and acknowledge it."""
    log.info("cloudevent received", cloudevent=handlers.describe(event))
    return None
