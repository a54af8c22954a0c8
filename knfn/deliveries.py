"""``knfn events``: the broker's deliveries, one line each, as they happen.

It reads the admin API's ``/events`` (the latest deliveries, newest first) and, with
``--follow``, polls it: a delivery is printed when it first shows up and again whenever its
state, attempts or status change (pending, a retry, then delivered or dead), as ``kubectl get
--watch`` prints an object again when it changes. :class:`Changes` is the pure part.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from knfn.errors import KnfnError

POLL_INTERVAL = 0.5
# Rows read per poll while following: more deliveries than this changing within one poll
# would be missed, which a local run does not reach.
FOLLOW_WINDOW = 500
COLUMNS = ("TIME", "EVENT", "TYPE", "TRIGGER", "STATE", "STATUS", "ATTEMPTS", "LATENCY")
# EVENT fits a UUID (36), the id the broker's sources, PingSource and `knfn invoke` give an
# event, so the columns after it stay under their headers.
WIDTHS = (23, 36, 28, 28, 9, 6, 8, 0)

Delivery = Mapping[str, Any]


def fetch(admin_port: int, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` deliveries from a running ``knfn dev``, newest first."""
    url = f"http://127.0.0.1:{admin_port}/events?limit={limit}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            rows: list[dict[str, Any]] = json.loads(resp.read())["events"]
    except OSError as exc:
        raise KnfnError(f"no knfn dev answers at {url} ({exc}); is it running?") from exc
    return rows


def _key(row: Delivery) -> tuple[Any, ...]:
    """What tells one delivery from another: its event, its trigger and where it goes."""
    return tuple(
        row.get(k)
        for k in ("namespace", "source", "event_id", "trigger", "kind", "destination",
                  "accepted_at")
    )  # fmt: skip


def _progress(row: Delivery) -> tuple[Any, ...]:
    return (row.get("state"), row.get("attempts"), row.get("last_status"))


class Changes:
    """Which deliveries are new or have moved on since the previous look."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def update(self, newest_first: Sequence[Delivery]) -> list[Delivery]:
        """The rows to print, oldest first; remembers only what the latest look returned."""
        fresh: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        changed = []
        for row in reversed(newest_first):
            key, progress = _key(row), _progress(row)
            fresh[key] = progress
            if self._seen.get(key) != progress:
                changed.append(row)
        self._seen = fresh
        return changed


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def line(row: Delivery) -> str:
    """One delivery: time, event id, type, trigger, state, status, attempts, latency."""
    accepted = str(row.get("accepted_at") or "")
    latency = row.get("latency_ms")
    cells = (
        accepted[:23].replace("T", " ") or "-",
        _cell(row.get("event_id")),
        _cell(row.get("type")),
        _cell(row.get("trigger")),
        _cell(row.get("state")),
        _cell(row.get("last_status")),
        _cell(row.get("attempts")),
        "-" if latency is None else f"{float(latency):.0f}ms",
    )
    return _row(cells)


def header() -> str:
    return _row(COLUMNS)


def _row(cells: Sequence[str]) -> str:
    return " ".join(c.ljust(w) for c, w in zip(cells, WIDTHS, strict=True)).rstrip()


def run(
    read: Callable[[int], Sequence[Delivery]],
    out: Callable[[str], None],
    *,
    limit: int,
    follow: bool,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = POLL_INTERVAL,
) -> None:
    """Print the latest ``limit`` deliveries, oldest first; following, then every change."""
    changes = Changes()
    window = max(limit, FOLLOW_WINDOW) if follow else limit
    out(header())
    # Following, the first look takes the whole window, so that the older rows in it are
    # known (and not printed as new at the next look), but prints only the latest `limit`.
    for row in changes.update(read(window))[-limit:]:
        out(line(row))
    while follow and not stop():
        sleep(interval)
        for row in changes.update(read(window)):
            out(line(row))
