"""The admin API's events face: recent deliveries, one event inspected, and replay.

- ``GET /events?limit=N``: the latest deliveries, newest first (each names its stored event's
  number as ``event`` and the CloudEvent's id as ``event_id``).
- ``GET /events/<number>``: the stored event with every delivery made of it (per Trigger,
  dead letters, replays) and every attempt of each (status, latency, error, time).
- ``POST /events/<number>/replay`` with a JSON object, ``{}`` or ``{"trigger": NAME}``: the
  event delivered again (knfn/eventing/replay.py); 202 with the replay's number and deliveries.

The parsers are pure and refuse with :class:`BadRequest` naming the field and value; the errors
of the eventing side map to statuses in :func:`_answer`, the one place that does so. The
same-origin rule for POST is the admin API's (knfn/admin_api.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg
from aiohttp import web

from knfn.errors import KnfnError
from knfn.eventing.history import EventNotFound
from knfn.eventing.replay import ReplayRefused
from knfn.eventing.store import StoreUnavailable
from knfn.responses import json_error

MAX_LIMIT = 10_000
MAX_NUMBER = 2**63 - 1  # bigserial
MAX_BODY = 4096  # a replay request is a tiny JSON object
REPLAY_FIELDS = frozenset({"trigger"})


class EventLog(Protocol):
    """What the events face reads and asks of the broker (knfn/eventing/runtime.py)."""

    async def events(self, limit: int) -> list[dict[str, Any]]: ...

    async def event(self, number: int) -> dict[str, Any]: ...

    async def replay(self, number: int, trigger: str | None) -> dict[str, Any]: ...


class BadRequest(KnfnError, ValueError):
    """A request the events face cannot take: 400 with the field and value named."""


def parse_limit(raw: str | None, default: int = 100) -> int:
    """The ``limit`` query parameter: an integer 1..MAX_LIMIT."""
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer 1..{MAX_LIMIT}, not {raw!r}")
    return int(raw)


def parse_number(raw: str) -> int:
    """A stored event's number in the path: a positive integer (``event`` in /events)."""
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_NUMBER:
        raise BadRequest(
            f"event number must be a positive integer (the 'event' of /events), not {raw!r}"
        )
    return int(raw)


def parse_replay(body: bytes) -> str | None:
    """The replay request: a JSON object, empty or with a ``trigger`` name; the Trigger."""
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the replay request is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(f"the replay request must be a JSON object, not {type(doc).__name__}")
    unknown = sorted(set(doc) - REPLAY_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown} in the replay request; known: ['trigger']")
    trigger = doc.get("trigger")
    if trigger is None:
        return None
    if not isinstance(trigger, str) or not trigger:
        raise BadRequest(f"field 'trigger' must be a non-empty string, not {trigger!r}")
    return trigger


def _error(status: int, exc: Exception) -> web.Response:
    return json_error(status, str(exc))


async def _answer(work: Callable[[], Awaitable[web.Response]]) -> web.Response:
    """Run a handler's work, mapping the eventing side's errors to statuses (only here)."""
    try:
        return await work()
    except BadRequest as exc:
        return _error(400, exc)
    except EventNotFound as exc:
        return _error(404, exc)
    except ReplayRefused as exc:
        return _error(409, exc)
    except StoreUnavailable as exc:
        return _error(503, exc)
    except (psycopg.OperationalError, OSError) as exc:
        return _error(503, StoreUnavailable(f"the broker's database is unavailable: {exc}"))


def add_routes(app: web.Application, log: EventLog) -> None:
    """/events, /events/<number> and /events/<number>/replay on app."""

    async def recent(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            limit = parse_limit(request.query.get("limit"))
            return web.json_response({"events": await log.events(limit)})

        return await _answer(work)

    async def one(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            return web.json_response(await log.event(parse_number(request.match_info["number"])))

        return await _answer(work)

    async def replay(request: web.Request) -> web.Response:
        async def work() -> web.Response:
            number = parse_number(request.match_info["number"])
            body = b""
            if request.content_length is None or request.content_length <= MAX_BODY:
                body = await request.read()
            if len(body) > MAX_BODY or (request.content_length or 0) > MAX_BODY:
                raise BadRequest(f"the replay request is over {MAX_BODY} bytes")
            trigger = parse_replay(body)
            return web.json_response(await log.replay(number, trigger), status=202)

        return await _answer(work)

    app.router.add_get("/events", recent)
    app.router.add_get("/events/{number}", one)
    app.router.add_post("/events/{number}/replay", replay)
