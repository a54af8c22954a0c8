"""PingSource (sources.knative.dev/v1): a cron schedule that sends one CloudEvent to a sink.

Pure cores (:func:`parse_schedule`, :func:`next_fire`, :func:`build_event`) and a thin
scheduler (:func:`run`) with the clock, the sleep and the event ids injected. What each rule
follows (knative/eventing unless named):

* Fields and defaults: ``pkg/apis/sources/v1/ping_types.go`` and ``ping_defaults.go`` (an empty
  ``schedule`` is ``* * * * *``).
* Validation: ``pkg/apis/sources/v1/ping_validation.go``. The schedule is parsed by
  robfig/cron v3 with an optional seconds field first, so both ``*/10 * * * *`` and
  ``0 */10 * * * *`` are valid; the descriptors ``@yearly``, ``@annually``, ``@monthly``,
  ``@weekly``, ``@daily``, ``@midnight`` and ``@hourly`` too, ``@every`` is refused. The
  ``timezone`` must be an IANA name. ``data`` and ``dataBase64`` exclude each other;
  ``dataBase64`` must be standard, padded base64; with ``contentType: application/json`` the
  data must be a JSON object. ``ceOverrides.extensions`` names are ASCII letters and digits
  (knative.dev/pkg ``apis/duck/v1/source_types.go``) and are lowercased, as the CloudEvents Go
  SDK does when it sets them.
* Stricter than upstream, so that a mistake cannot pass silently: unknown ``spec`` fields are
  refused (knfn/schema.py); a ``ceOverrides`` extension named like a context attribute
  (``type``, ``id``, ...) is refused instead of producing an event with two values for it;
  ``contentType``, when there is data, must be a media type (``type/subtype``), since an event
  with anything else is refused by every CloudEvents receiver.
* Cron grammar (robfig/cron v3 ``parser.go``, not croniter's): fields are comma lists of
  ``*``, ``?``, ``N``, ``N-M`` with an optional ``/step``; ``N/step`` runs from N to the
  field's maximum; month and weekday take three-letter English names; weekdays are 0-6
  (Sunday 0, so 7 is out of range); ``L``, ``W``, ``#`` and ``H`` do not exist. Day of month
  and day of week: when either was written as ``*`` or ``?`` (without a step above 1) a day
  must match both, otherwise either. A ``CRON_TZ=<zone>`` or ``TZ=<zone>`` prefix sets the zone.
* When a schedule fires (robfig/cron v3 ``spec.go`` Next, as ``pkg/adapter/mtping/runner.go``
  runs it with ``CRON_TZ=<timezone>``): at the first whole second after a moment whose
  wall-clock time in the zone matches the schedule. Across a DST change that means a wall time
  that does not exist is skipped (``30 2 * * *`` does not fire on the night clocks jump from
  2:00 to 3:00) and one that happens twice fires twice. Without a ``timezone`` the adapter's
  own zone applies, which is UTC in its container, so UTC here. A schedule that matches no
  date (``0 0 30 2 *``) never fires: :func:`next_fire` gives None, as upstream gives Go's zero
  time after searching five years.
* The event (``pkg/adapter/mtping/runner.go`` makeEvent and cronTick;
  ``pkg/apis/sources/v1/ping_lifecycle.go``): specversion 1.0, a fresh UUID as ``id``,
  ``source`` ``/apis/v1/namespaces/<namespace>/pingsources/<name>``, ``type``
  ``dev.knative.sources.ping``, ``time`` (upstream stamps the moment of sending, up to half
  a second of random spread after the tick; here the tick itself), the ceOverrides
  extensions, and the data with ``datacontenttype`` = ``contentType`` only when there is data
  and a content type. Sent in binary mode.
* Sending (``pkg/adapter/v2/cloudevents.go`` and the CloudEvents Go SDK's HTTP protocol): up
  to 5 retries with exponential backoff from 50 ms (waits of 0.1, 0.2, 0.4, 0.8 and 1.6 s) on
  no response and on 404, 413, 425, 429, 502, 503 and 504; then the event is lost and the
  failure logged. A tick that was missed (the process was busy or asleep) is not replayed:
  the next fire is computed from now, as the cron runner does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from knfn.eventing import cloudevent, delivery, flows
from knfn.eventing.cloudevent import Event
from knfn.eventing.delivery import DeliveryError, Destination
from knfn.eventing.sending import Sender
from knfn.manifests import ManifestError, Manifests

EVENT_TYPE = "dev.knative.sources.ping"
DEFAULT_SCHEDULE = "* * * * *"
SEND_RETRIES = 5
SEND_BACKOFF = 0.05  # seconds; the wait before retry n is SEND_BACKOFF * 2**n
SEND_RETRYABLE = frozenset({404, 413, 425, 429, 502, 503, 504})
# The adapter sets no per-request timeout by default; a hung sink should not pile up sends.
SEND_TIMEOUT = 60.0
SEARCH_YEARS = 5  # how far next_fire looks ahead, as robfig/cron does

_CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"}
)
_EXTENSION_NAME = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*(;.*)?")
_NUMBER = re.compile(r"[0-9]+", re.ASCII)

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names), in the order of a six-field spec (seconds first).
_FIELDS: tuple[tuple[str, int, int, Mapping[str, int] | None], ...] = (
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _WEEKDAYS),
)
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron spec: the values each field allows, and where it came from."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    # Whether day of month / day of week were written as * or ? (decides AND or OR).
    days_star: bool
    weekdays_star: bool
    zone: str | None = None  # from a CRON_TZ= or TZ= prefix

    def day_matches(self, day: date) -> bool:
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return in_days and in_weekdays
        return in_days or in_weekdays


@dataclass(frozen=True)
class PingSource:
    """A PingSource, validated; ``sink_url`` is where its events go."""

    namespace: str
    name: str
    schedule: str
    timezone: str  # "" when not set: UTC
    content_type: str
    data: bytes | None
    sink: Destination
    sink_url: str
    ce_overrides: tuple[tuple[str, str], ...] = ()  # extensions, lowercased names

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def event_source(self) -> str:
        """The CloudEvents ``source`` of its events (ping_lifecycle.go PingSourceSource)."""
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"


# -- the schedule ----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def parse_schedule(text: str) -> CronSchedule:
    """A cron spec as robfig/cron v3 reads it for a PingSource; ValueError says what is wrong."""
    spec = text.strip()
    if not spec:
        return parse_schedule(DEFAULT_SCHEDULE)
    if "@every" in spec:
        raise ValueError("the descriptor @every is not supported for a PingSource")
    zone: str | None = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, rest = spec.partition(" ")
        zone = prefix.partition("=")[2]
        zone_info(zone)
        spec = rest.strip()
        if not spec:
            raise ValueError(f"{text!r} has a time zone but no schedule after it")
    if spec.startswith("@"):
        if spec not in _DESCRIPTORS:
            raise ValueError(
                f"unrecognized descriptor {spec!r}; use one of {', '.join(_DESCRIPTORS)}"
            )
        spec = _DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise ValueError(
            f"{text!r} has {len(fields)} fields: a schedule has 5 (minute hour day-of-month "
            "month day-of-week), or 6 with seconds first"
        )
    second, minute, hour, day, month, weekday = (
        _parse_field(raw, label, lo, hi, names)
        for raw, (label, lo, hi, names) in zip(fields, _FIELDS, strict=True)
    )
    return CronSchedule(
        text, second[0], minute[0], hour[0], day[0], month[0], weekday[0],
        days_star=day[1], weekdays_star=weekday[1], zone=zone,
    )  # fmt: skip


def _parse_field(
    raw: str, label: str, lo: int, hi: int, names: Mapping[str, int] | None
) -> tuple[frozenset[int], bool]:
    """The values one field allows, and whether it counts as a star for the day rule."""
    allowed: set[int] = set()
    star = False
    for part in raw.split(","):
        where = f"{label} field {raw!r}"
        pieces = part.split("/")
        if len(pieces) > 2:
            raise ValueError(f"{where}: {part!r} has more than one /")
        bounds = pieces[0].split("-")
        part_star = False
        if pieces[0] in ("*", "?"):
            start, end, part_star = lo, hi, True
        elif len(bounds) > 2:
            raise ValueError(f"{where}: {part!r} has more than one -")
        else:
            start = _value(bounds[0], where, names)
            end = _value(bounds[1], where, names) if len(bounds) == 2 else start
        step = 1
        if len(pieces) == 2:
            if not _NUMBER.fullmatch(pieces[1]) or int(pieces[1]) == 0:
                raise ValueError(f"{where}: the step in {part!r} must be a positive number")
            step = int(pieces[1])
            if len(bounds) == 1 and not part_star:
                end = hi  # N/step runs from N to the field's maximum
            if step > 1:
                part_star = False
        if start < lo:
            raise ValueError(f"{where}: {start} is below the minimum {lo}")
        if end > hi:
            raise ValueError(f"{where}: {end} is above the maximum {hi}")
        if start > end:
            raise ValueError(f"{where}: the range {part!r} starts after it ends")
        allowed.update(range(start, end + 1, step))
        star = star or part_star
    return frozenset(allowed), star


def _value(text: str, where: str, names: Mapping[str, int] | None) -> int:
    if names is not None and text.lower() in names:
        return names[text.lower()]
    if not _NUMBER.fullmatch(text):
        kind = " or a name such as " + ", ".join(list(names)[:3]) if names else ""
        raise ValueError(f"{where}: {text!r} is not a number{kind}")
    return int(text)


@lru_cache(maxsize=64)
def zone_info(name: str) -> tzinfo:
    """The IANA time zone ``name`` ("" is UTC); ValueError when there is none by that name."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone name such as Europe/Paris or America/New_York"
        ) from None


def next_fire(source: PingSource, after: datetime) -> datetime | None:
    """When the source fires next, strictly after ``after`` (in the source's zone).

    None when the schedule matches no moment in the next five years.
    """
    return next_time(parse_schedule(source.schedule), source.timezone, after)


def next_time(schedule: CronSchedule, timezone: str, after: datetime) -> datetime | None:
    """The first whole second after ``after`` whose wall-clock time in the zone matches."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = zone_info(timezone or schedule.zone or "")
    t = after.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    last_year = t.year + SEARCH_YEARS
    # Walk forward in absolute time, jumping over whole months, days, hours and minutes that
    # cannot match. Every step moves t forward, so the loop ends.
    while t.year <= last_year:
        local = t.astimezone(zone)
        if local.month not in schedule.months:
            first = date(local.year + local.month // 12, local.month % 12 + 1, 1)
            t = _start_of_day(first, zone)
        elif not schedule.day_matches(local.date()):
            t = _start_of_day(local.date() + timedelta(days=1), zone)
        elif local.hour not in schedule.hours:
            t += timedelta(seconds=3600 - local.minute * 60 - local.second)
        elif local.minute not in schedule.minutes:
            t += timedelta(seconds=60 - local.second)
        elif local.second not in schedule.seconds:
            t += timedelta(seconds=1)
        else:
            return local
    return None


def _start_of_day(day: date, zone: tzinfo) -> datetime:
    # fold=0: a midnight that falls in a DST gap maps to the moment the gap ends.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


# -- the event -------------------------------------------------------------------------------


def build_event(source: PingSource, fire_time: datetime, event_id: str) -> Event:
    """The CloudEvent a source sends for the tick at ``fire_time``."""
    attributes = {
        "specversion": cloudevent.SPECVERSION,
        "id": event_id,
        "source": source.event_source,
        "type": EVENT_TYPE,
        "time": rfc3339(fire_time),
        **dict(source.ce_overrides),
    }
    if source.data is not None and source.content_type:
        attributes["datacontenttype"] = source.content_type
    return Event(attributes, source.data)


def rfc3339(moment: datetime) -> str:
    """A moment in UTC as Go's RFC3339Nano writes it: no fraction when it is whole."""
    if moment.tzinfo is None:
        raise ValueError("the moment must be timezone-aware")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


# -- the manifests ---------------------------------------------------------------------------


def load(m: Manifests) -> list[PingSource]:
    """Every PingSource of the manifests, validated; ManifestError names file, object, field."""
    return [_ping_source(m, path, doc) for path, doc in m.others if doc.get("kind") == "PingSource"]


def _ping_source(m: Manifests, path: Path, doc: Mapping[str, Any]) -> PingSource:
    meta = doc.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
    label = f"PingSource {name}"

    def fail(fld: str, problem: str) -> ManifestError:
        return ManifestError(path, label, fld, problem)

    spec = doc.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise fail("spec", "must be an object")
    # Unknown fields were refused when the manifests were read (knfn/schema.py).
    schedule = _string(spec, "schedule", fail) or DEFAULT_SCHEDULE
    timezone = _string(spec, "timezone", fail)
    content_type = _string(spec, "contentType", fail)
    text, encoded = _string(spec, "data", fail), _string(spec, "dataBase64", fail)

    try:
        cron = parse_schedule(schedule)
    except ValueError as exc:
        raise fail("spec.schedule", str(exc)) from None
    if timezone:
        if cron.zone is not None:
            raise fail(
                "spec.schedule",
                f"sets a time zone and spec.timezone is set too ({timezone!r}); give one",
            )
        try:
            zone_info(timezone)
        except ValueError as exc:
            raise fail("spec.timezone", str(exc)) from None

    data = _data(text, encoded, content_type, fail)

    if spec.get("sink") is None:
        raise fail("spec.sink", "is required")
    try:
        sink = delivery.parse_destination(spec["sink"], "spec.sink")
    except DeliveryError as exc:
        raise fail(*_split(str(exc), "spec.sink")) from None
    try:
        sink_url = flows.destination_url(m, sink, namespace)
    except ValueError as exc:
        raise fail("spec.sink", str(exc)) from None

    return PingSource(
        namespace, name, schedule, timezone, content_type, data, sink, sink_url,
        _ce_overrides(spec.get("ceOverrides"), fail),
    )  # fmt: skip


def _data(
    text: str, encoded: str, content_type: str, fail: Callable[[str, str], ManifestError]
) -> bytes | None:
    """The event data from spec.data or spec.dataBase64, checked as ping_validation.go does."""
    if text and encoded:
        raise fail("spec.data", "data and dataBase64 are mutually exclusive; give one")
    data: bytes | None = None
    if encoded:
        try:
            # Go's StdEncoding skips line breaks, and needs the padding.
            data = base64.b64decode(encoded.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise fail("spec.dataBase64", f"not valid base64: {exc}") from None
    elif text:
        data = text.encode("utf-8")
    if data is not None and content_type == "application/json":
        problem = _json_object_problem(data)
        if problem:
            fld = "spec.dataBase64" if encoded else "spec.data"
            raise fail(fld, f"contentType is application/json but {problem}")
    if data and content_type and not _MEDIA_TYPE.fullmatch(content_type.strip()):
        raise fail("spec.contentType", f"{content_type!r} is not a media type such as text/plain")
    return data


def _string(spec: Mapping[str, Any], key: str, fail: Callable[[str, str], ManifestError]) -> str:
    value = spec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(f"spec.{key}", f"{value!r} must be a string (quote it in YAML)")
    return value


def _json_object_problem(data: bytes) -> str | None:
    """Why data is not what Go's json.Unmarshal into a map accepts (an object or null)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"the data is not JSON ({exc})"
    if value is not None and not isinstance(value, dict):
        return "the data is JSON but not an object"
    return None


def _ce_overrides(
    raw: Any, fail: Callable[[str, str], ManifestError]
) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or any(key != "extensions" for key in raw):
        raise fail("spec.ceOverrides", "must be an object with only extensions")
    extensions = raw.get("extensions") or {}
    if not isinstance(extensions, Mapping):
        raise fail("spec.ceOverrides.extensions", "must be an object of names to strings")
    out: dict[str, str] = {}
    for key, value in extensions.items():
        where = f"spec.ceOverrides.extensions.{key}"
        if not isinstance(key, str) or not _EXTENSION_NAME.fullmatch(key):
            raise fail(where, "extension names are ASCII letters and digits only")
        if key.lower() in _CONTEXT_ATTRIBUTES or key.lower() == "data":
            raise fail(where, f"{key.lower()} is a CloudEvents context attribute, not an extension")
        if not isinstance(value, str):
            raise fail(where, f"{value!r} must be a string (quote it in YAML)")
        out[key.lower()] = value
    return tuple(sorted(out.items()))


def _split(message: str, default_field: str) -> tuple[str, str]:
    """("spec.sink.uri", "must be ...") from a message "spec.sink.uri: must be ..."."""
    fld, sep, problem = message.partition(": ")
    return (fld, problem) if sep and " " not in fld else (default_field, message)


# -- the scheduler ---------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


async def run(
    sources: Callable[[], Sequence[PingSource]],
    send: Sender,
    stop: asyncio.Event,
    *,
    report: Callable[[str], None],
    clock: Callable[[], datetime] = _now,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    new_id: Callable[[], str] = _new_id,
    poll: float = 1.0,
    drain: float = 5.0,
) -> None:
    """Fire every source at its schedule, sending its event to its sink, until ``stop`` is set.

    ``sources`` is asked again at least every ``poll`` seconds, so added, changed and removed
    PingSources take effect without a restart (a changed one is scheduled afresh from now).
    ``sleep`` defaults to waiting on ``stop``; tests pass one that advances a fake ``clock``.
    Failed sends are given to ``report``. On stop, sends in flight get ``drain`` seconds.
    """
    wait = sleep or _stoppable_sleep(stop)
    plan: dict[PingSource, datetime | None] = {}
    sending: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            now = clock()
            previous, plan = plan, {}
            for source in sources():
                if source in previous:
                    plan[source] = previous[source]
                    continue
                plan[source] = next_fire(source, now)
                if plan[source] is None:
                    report(f"PingSource {source.key}: schedule {source.schedule!r} never fires")
            for source, due in list(plan.items()):
                if due is not None and due <= now:
                    task = asyncio.create_task(_fire(source, due, send, wait, report, new_id()))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                    plan[source] = next_fire(source, now)
            upcoming = [due for due in plan.values() if due is not None]
            delay = poll
            if upcoming:
                delay = min(poll, max(0.0, (min(upcoming) - now).total_seconds()))
            await wait(delay)
    finally:
        # Let sends in flight finish for a moment, then cancel what is left.
        if sending:
            _, pending = await asyncio.wait(set(sending), timeout=drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _fire(
    source: PingSource,
    fire_time: datetime,
    send: Sender,
    sleep: Callable[[float], Awaitable[None]],
    report: Callable[[str], None],
    event_id: str,
) -> None:
    headers, body = cloudevent.to_binary(build_event(source, fire_time, event_id))
    attempts = 0
    while True:
        status, _, _, error = await send(source.sink_url, headers, body, SEND_TIMEOUT)
        attempts += 1
        if status is not None and 200 <= status < 300:
            return
        retryable = status is None or status in SEND_RETRYABLE
        if not retryable or attempts > SEND_RETRIES:
            break
        await sleep(SEND_BACKOFF * 2**attempts)
    outcome = f"status {status}" if status is not None else (error or "no response")
    report(
        f"PingSource {source.key}: event {event_id} to {source.sink_url} failed after "
        f"{attempts} attempt{'s' if attempts > 1 else ''}: {outcome}"
    )


def _stoppable_sleep(stop: asyncio.Event) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return sleep
