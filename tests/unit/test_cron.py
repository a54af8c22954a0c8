"""Cron schedules as a PingSource reads them (robfig/cron v3): grammar, next fire, zones, DST."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from knfn.eventing import cron

NEW_YORK = ZoneInfo("America/New_York")


def fire(schedule: str, after: datetime, timezone: str = "") -> datetime | None:
    return cron.next_time(cron.parse_schedule(schedule), timezone, after)


def fires(schedule: str, after: datetime, count: int, timezone: str = "") -> list[datetime]:
    out: list[datetime] = []
    at: datetime | None = after
    for _ in range(count):
        assert at is not None
        at = fire(schedule, at, timezone)
        assert at is not None
        out.append(at)
    return out


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# -- next fire -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("*/5 * * * *", utc(2025, 1, 1, 12, 3, 10), utc(2025, 1, 1, 12, 5)),
        ("* * * * *", utc(2025, 1, 1, 12, 5), utc(2025, 1, 1, 12, 6)),
        ("5/15 * * * *", utc(2025, 1, 1, 12, 51), utc(2025, 1, 1, 13, 5)),
        ("*/10 * * * * *", utc(2025, 1, 1, 0, 0, 7), utc(2025, 1, 1, 0, 0, 10)),
        ("0 9 * * mon-fri", utc(2025, 1, 3, 9), utc(2025, 1, 6, 9)),
        ("0 0 1 JAN,jul *", utc(2025, 2, 1), utc(2025, 7, 1)),
        ("0 0 29 2 *", utc(2025, 3, 1), utc(2028, 2, 29)),
        ("@hourly", utc(2025, 1, 1, 12, 0, 1), utc(2025, 1, 1, 13)),
        ("@daily", utc(2025, 1, 1, 12), utc(2025, 1, 2)),
        ("@midnight", utc(2025, 1, 1, 12), utc(2025, 1, 2)),
        ("@weekly", utc(2025, 1, 1), utc(2025, 1, 5)),
        ("@monthly", utc(2025, 1, 15), utc(2025, 2, 1)),
        ("@yearly", utc(2025, 1, 15), utc(2026, 1, 1)),
        ("@annually", utc(2025, 1, 15), utc(2026, 1, 1)),
        ("0 0 * * ?", utc(2025, 1, 1, 1), utc(2025, 1, 2)),
    ],
)
def test_next_fire(schedule: str, after: datetime, expected: datetime) -> None:
    """The first matching whole second strictly after the given moment, in UTC by default."""
    assert fire(schedule, after) == expected


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # Both restricted: either matches (the 1st, or a Monday).
        ("0 0 1 * 1", utc(2025, 1, 6)),
        # A star in one of them: both must match.
        ("0 0 * * 1", utc(2025, 1, 6)),
        ("0 0 1 * *", utc(2025, 2, 1)),
        # */2 with a step above 1 is not a star for this rule: either matches (the 3rd).
        ("0 0 */2 * 1", utc(2025, 1, 3)),
        # */1 still counts as a star: both must match (a Monday).
        ("0 0 */1 * 1", utc(2025, 1, 6)),
    ],
)
def test_day_of_month_and_day_of_week_combine_as_robfig_cron(
    schedule: str, expected: datetime
) -> None:
    """Day of month and day of week: OR when both are restricted, AND when one is a star."""
    assert fire(schedule, utc(2025, 1, 2)) == expected


@pytest.mark.parametrize(
    "schedule",
    ["*/7 * * * *", "0 */3 * * *", "15,45 8-17 * * 1-5", "0 0 1,15 * *", "30 6 * 2-4 *"],
)
def test_agrees_with_croniter_on_plain_utc_schedules(schedule: str) -> None:
    """Where the two grammars agree (five fields, UTC), fires are croniter's."""
    start = utc(2025, 1, 30, 22, 59, 30)
    expected = croniter(schedule, start).all_next(datetime)
    assert fires(schedule, start, 25) == [next(expected) for _ in range(25)]


def test_timezone_moves_the_fire_with_the_zone_offset() -> None:
    """0 9 * * * in Europe/Paris is 08:00Z in winter and 07:00Z in summer."""
    winter = fire("0 9 * * *", utc(2025, 1, 1), "Europe/Paris")
    summer = fire("0 9 * * *", utc(2025, 7, 1), "Europe/Paris")
    assert winter == utc(2025, 1, 1, 8) and summer == utc(2025, 7, 1, 7)
    assert winter is not None and str(winter.tzinfo) == "Europe/Paris"


def test_cron_tz_prefix_in_the_schedule_sets_the_zone() -> None:
    """CRON_TZ=<zone> (and TZ=<zone>) before the fields sets the zone, as robfig/cron reads it."""
    assert fire("CRON_TZ=Asia/Tokyo 0 9 * * *", utc(2025, 1, 1)) == utc(2025, 1, 2, 0)
    assert fire("TZ=Asia/Tokyo 0 9 * * *", utc(2025, 1, 1)) == utc(2025, 1, 2)


def test_dst_spring_forward_skips_a_wall_time_that_does_not_exist() -> None:
    """30 2 * * * in New York does not fire on 2025-03-09, when 2:00 jumps to 3:00."""
    got = fires("30 2 * * *", datetime(2025, 3, 8, 2, 30, tzinfo=NEW_YORK), 2, "America/New_York")
    assert [g.date().isoformat() for g in got] == ["2025-03-10", "2025-03-11"]
    assert got[0] == datetime(2025, 3, 10, 6, 30, tzinfo=UTC)


def test_dst_fall_back_fires_twice_for_a_wall_time_that_happens_twice() -> None:
    """30 1 * * * in New York fires at 1:30 EDT and again at 1:30 EST on 2025-11-02."""
    got = fires("30 1 * * *", datetime(2025, 11, 1, 1, 30, tzinfo=NEW_YORK), 3, "America/New_York")
    assert [g.astimezone(UTC) for g in got] == [
        utc(2025, 11, 2, 5, 30),
        utc(2025, 11, 2, 6, 30),
        utc(2025, 11, 3, 6, 30),
    ]


def test_hourly_schedule_keeps_one_hour_steps_across_dst() -> None:
    """An hourly schedule fires every real hour through both DST changes."""
    for day in (datetime(2025, 3, 9, tzinfo=UTC), datetime(2025, 11, 2, tzinfo=UTC)):
        # In UTC: Python subtracts two times of one zone by their wall clocks.
        got = [g.astimezone(UTC) for g in fires("0 * * * *", day, 12, "America/New_York")]
        gaps = {b - a for a, b in itertools.pairwise(got)}
        assert gaps == {timedelta(hours=1)}


def test_a_schedule_that_matches_no_date_never_fires() -> None:
    """February 30th: no fire within five years, so None (robfig/cron's zero time)."""
    assert fire("0 0 30 2 *", utc(2025, 1, 1)) is None


def test_next_fire_needs_an_aware_datetime() -> None:
    """A naive datetime has no instant; it is refused rather than guessed."""
    with pytest.raises(ValueError, match="timezone-aware"):
        fire("* * * * *", datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("60 * * * *", "minute field '60': 60 is above the maximum 59"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day of month field '0': 0 is below the minimum 1"),
        ("* * * 13 *", "month field"),
        ("* * * * 7", "day of week field '7': 7 is above the maximum 6"),
        ("* * * * mon-sun", "starts after it ends"),
        ("0 0 L * *", "'L' is not a number"),
        ("0 0 * * 1#2", "not a number"),
        ("H * * * *", "not a number"),
        ("*/0 * * * *", "step in '*/0' must be a positive number"),
        ("1-2-3 * * * *", "more than one -"),
        ("1/2/3 * * * *", "more than one /"),
        ("@every 1m", "@every is not supported"),
        ("@reboot", "unrecognized descriptor '@reboot'"),
        ("CRON_TZ=Mars/Olympus * * * * *", "not an IANA time zone"),
        ("TZ=Europe/Paris", "has a time zone but no schedule after it"),
        ("", "the schedule is empty"),
    ],
)
def test_invalid_schedules_say_which_field(schedule: str, message: str) -> None:
    """Invalid cron specs are CronErrors (ValueErrors) naming the field and the value."""
    with pytest.raises(cron.CronError, match=re.escape(message)):
        cron.parse_schedule(schedule)


def test_an_explicit_timezone_wins_over_the_schedule_prefix() -> None:
    """next_time's zone argument (a PingSource's spec.timezone) comes before CRON_TZ=."""
    assert fire("CRON_TZ=Asia/Tokyo 0 9 * * *", utc(2025, 1, 1), "UTC") == utc(2025, 1, 1, 9)
