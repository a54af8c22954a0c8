"""Cron schedules as a PingSource reads them: robfig/cron v3's grammar and its Next. Pure.

Knative parses a PingSource's ``schedule`` with robfig/cron v3, both when it validates it
(knative/eventing ``pkg/apis/sources/v1/ping_validation.go``) and when the adapter runs it
(``pkg/adapter/mtping/adapter.go`` and ``runner.go``), with one parser: an optional seconds
field first, then minute, hour, day of month, month and day of week, and descriptors.
croniter and its kin read another dialect (seconds last, ``L``/``W``/``#``/``H``, 7 for
Sunday, another day-of-month/day-of-week rule, another walk across DST changes), so the
grammar is written out here and croniter only checks it in the tests where the two agree.

* Grammar (robfig/cron v3 ``parser.go``): 5 fields, or 6 with seconds first; fields are comma
  lists of ``*``, ``?``, ``N``, ``N-M`` with an optional ``/step``; ``N/step`` runs from N to
  the field's maximum; month and weekday take three-letter English names; weekdays are 0-6
  (Sunday 0, so 7 is out of range); ``L``, ``W``, ``#`` and ``H`` do not exist. The
  descriptors ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``
  and ``@hourly``; ``@every`` is refused (ping_validation.go). Day of month and day of week:
  when either was written as ``*`` or ``?`` (without a step above 1) a day must match both,
  otherwise either. A ``CRON_TZ=<zone>`` or ``TZ=<zone>`` prefix sets the zone.
* When a schedule fires (robfig/cron v3 ``spec.go`` Next): at the first whole second after a
  moment whose wall-clock time in the zone matches the schedule. Across a DST change that
  means a wall time that does not exist is skipped (``30 2 * * *`` does not fire on the night
  clocks jump from 2:00 to 3:00) and one that happens twice fires twice. A schedule that
  matches no date (``0 0 30 2 *``) never fires: :func:`next_time` gives None, as upstream
  gives Go's zero time after searching five years.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from knfn.errors import KnfnError

SEARCH_YEARS = 5  # how far next_time looks ahead, as robfig/cron does

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


class CronError(KnfnError, ValueError):
    """A cron spec or time zone is invalid; the message names the field and the value."""


@lru_cache(maxsize=256)
def parse_schedule(text: str) -> CronSchedule:
    """A cron spec as robfig/cron v3 reads it for a PingSource; CronError says what is wrong."""
    spec = text.strip()
    if not spec:
        raise CronError("the schedule is empty")
    if "@every" in spec:
        raise CronError("the descriptor @every is not supported for a PingSource")
    zone: str | None = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, rest = spec.partition(" ")
        zone = prefix.partition("=")[2]
        zone_info(zone)
        spec = rest.strip()
        if not spec:
            raise CronError(f"{text!r} has a time zone but no schedule after it")
    if spec.startswith("@"):
        if spec not in _DESCRIPTORS:
            raise CronError(
                f"unrecognized descriptor {spec!r}; use one of {', '.join(_DESCRIPTORS)}"
            )
        spec = _DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise CronError(
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
            raise CronError(f"{where}: {part!r} has more than one /")
        bounds = pieces[0].split("-")
        part_star = False
        if pieces[0] in ("*", "?"):
            start, end, part_star = lo, hi, True
        elif len(bounds) > 2:
            raise CronError(f"{where}: {part!r} has more than one -")
        else:
            start = _value(bounds[0], where, names)
            end = _value(bounds[1], where, names) if len(bounds) == 2 else start
        step = 1
        if len(pieces) == 2:
            if not _NUMBER.fullmatch(pieces[1]) or int(pieces[1]) == 0:
                raise CronError(f"{where}: the step in {part!r} must be a positive number")
            step = int(pieces[1])
            if len(bounds) == 1 and not part_star:
                end = hi  # N/step runs from N to the field's maximum
            if step > 1:
                part_star = False
        if start < lo:
            raise CronError(f"{where}: {start} is below the minimum {lo}")
        if end > hi:
            raise CronError(f"{where}: {end} is above the maximum {hi}")
        if start > end:
            raise CronError(f"{where}: the range {part!r} starts after it ends")
        allowed.update(range(start, end + 1, step))
        star = star or part_star
    return frozenset(allowed), star


def _value(text: str, where: str, names: Mapping[str, int] | None) -> int:
    if names is not None and text.lower() in names:
        return names[text.lower()]
    if not _NUMBER.fullmatch(text):
        kind = " or a name such as " + ", ".join(list(names)[:3]) if names else ""
        raise CronError(f"{where}: {text!r} is not a number{kind}")
    return int(text)


@lru_cache(maxsize=64)
def zone_info(name: str) -> tzinfo:
    """The IANA time zone ``name`` ("" is UTC); CronError when there is none by that name."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"{name!r} is not an IANA time zone name such as Europe/Paris or America/New_York"
        ) from None


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
