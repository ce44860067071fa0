"""Cron occurrences in a time zone, as Temporal Schedules fire them (`cairn.schedule_times`).

Europe/Bucharest moves from 03:00 EET (UTC+2) to 04:00 EEST (UTC+3) at 01:00Z on 2026-03-29, and
from 04:00 EEST back to 03:00 EET at 01:00Z on 2026-10-25.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from cairn.journey_checks import cron_problem
from cairn.local_time import TimezoneError
from cairn.schedule_times import Cron, CronError, cron_occurrences

BUCHAREST = "Europe/Bucharest"


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def texts(moments: list[datetime]) -> list[str]:
    return [m.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") for m in moments]


def test_friday_at_five_in_bucharest_follows_both_daylight_saving_changes() -> None:
    spring = cron_occurrences("0 17 * * 5", BUCHAREST, z("2026-03-16T00:00Z"),
                              z("2026-04-06T00:00Z"))
    assert texts(spring) == ["2026-03-20T15:00Z", "2026-03-27T15:00Z", "2026-04-03T14:00Z"]
    autumn = cron_occurrences("0 17 * * fri", BUCHAREST, z("2026-10-12T00:00Z"),
                              z("2026-11-02T00:00Z"))
    assert texts(autumn) == ["2026-10-16T14:00Z", "2026-10-23T14:00Z", "2026-10-30T15:00Z"]


def test_a_local_time_skipped_by_the_spring_change_does_not_fire_that_day() -> None:
    found = cron_occurrences("30 3 * * *", BUCHAREST, z("2026-03-28T00:00Z"),
                             z("2026-03-31T00:00Z"))
    # 03:30 on the 28th is 01:30Z (EET); the 29th has no 03:30; the 30th is EEST.
    assert texts(found) == ["2026-03-28T01:30Z", "2026-03-30T00:30Z"]


def test_a_local_time_repeated_by_the_autumn_change_fires_twice() -> None:
    found = cron_occurrences("30 3 * * *", BUCHAREST, z("2026-10-24T00:00Z"),
                             z("2026-10-27T00:00Z"))
    assert texts(found) == ["2026-10-24T00:30Z",  # EEST
                            "2026-10-25T00:30Z", "2026-10-25T01:30Z",  # 03:30 EEST, then EET
                            "2026-10-26T01:30Z"]  # EET


def test_hourly_gives_23_hours_on_the_short_day_and_25_on_the_long_one() -> None:
    def local_day(day: str) -> list[datetime]:
        start = datetime.fromisoformat(f"{day}T00:00:00").replace(tzinfo=ZoneInfo(BUCHAREST))
        end = start.astimezone(UTC) + timedelta(hours=26)
        return [m for m in cron_occurrences("@hourly", BUCHAREST, start, end)
                if m.astimezone(start.tzinfo).date() == start.date()]

    short, long_ = local_day("2026-03-29"), local_day("2026-10-25")
    assert len(short) == 23
    assert len(long_) == 25
    # Consecutive instants are one real hour apart through both changes.
    for day in (short, long_):
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(day))


def test_both_ends_of_the_span_are_included() -> None:
    found = cron_occurrences("0 9 * * *", "UTC", z("2026-03-02T09:00Z"), z("2026-03-04T09:00Z"))
    assert texts(found) == ["2026-03-02T09:00Z", "2026-03-03T09:00Z", "2026-03-04T09:00Z"]
    assert cron_occurrences("0 9 * * *", "UTC", z("2026-03-02T09:01Z"),
                            z("2026-03-03T08:59Z")) == []


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("*/20 8-9 * * *", ["08:00", "08:20", "08:40", "09:00", "09:20", "09:40"]),
        ("5/25 8 * * *", ["08:05", "08:30", "08:55"]),  # from 5 to the end by 25
        ("0 7,19 * * *", ["07:00", "19:00"]),
        ("15 10-14/2 * * *", ["10:15", "12:15", "14:15"]),
        ("@daily", ["00:00"]),
        ("@midnight", ["00:00"]),
    ],
)
def test_minute_and_hour_syntax(cron: str, expected: list[str]) -> None:
    found = cron_occurrences(cron, "UTC", z("2026-03-02T00:00Z"), z("2026-03-02T23:59Z"))
    assert [m.strftime("%H:%M") for m in found] == expected


@pytest.mark.parametrize(
    ("cron", "days"),
    [
        ("0 9 * * mon-fri", ["03-02", "03-03", "03-04", "03-05", "03-06"]),
        ("0 9 * * sat,SUNDAY", ["03-07", "03-08"]),
        ("0 9 * * 7", ["03-08"]),      # 7 is Sunday, as 0 is
        ("0 9 * * 0", ["03-08"]),
        ("0 9 */3 * *", ["03-04", "03-07"]),  # days 1, 4, 7, ...
        ("@weekly", ["03-08"]),
    ],
)
def test_day_syntax(cron: str, days: list[str]) -> None:
    found = cron_occurrences(cron, "UTC", z("2026-03-02T00:00Z"), z("2026-03-08T23:59Z"))
    assert [m.strftime("%m-%d") for m in found] == days


def test_months_names_and_yearly_shortcuts() -> None:
    year = (z("2026-01-01T00:00Z"), z("2026-12-31T23:59Z"))
    assert texts(cron_occurrences("@yearly", "UTC", *year)) == ["2026-01-01T00:00Z"]
    assert texts(cron_occurrences("@annually", "UTC", *year)) == ["2026-01-01T00:00Z"]
    assert len(cron_occurrences("@monthly", "UTC", *year)) == 12
    assert texts(cron_occurrences("0 9 22 dec *", "UTC", *year)) == ["2026-12-22T09:00Z"]
    assert texts(cron_occurrences("0 9 1 jan-mar/2 *", "UTC", *year)) == [
        "2026-01-01T09:00Z", "2026-03-01T09:00Z"]
    # February 29th fires in leap years only.
    assert cron_occurrences("0 9 29 feb *", "UTC", *year) == []
    assert texts(cron_occurrences("0 9 29 2 *", "UTC", z("2028-01-01T00:00Z"),
                                  z("2028-12-31T00:00Z"))) == ["2028-02-29T09:00Z"]


def test_day_of_month_and_day_of_week_must_both_match_as_in_temporal() -> None:
    # Temporal matches every field; classic cron would fire on every 1st and every Monday.
    found = cron_occurrences("0 9 1 * mon", "UTC", z("2026-01-01T00:00Z"), z("2026-12-31T00:00Z"))
    assert texts(found) == ["2026-06-01T09:00Z"]


@pytest.mark.parametrize(
    "cron",
    ["0 9 * *", "0 9 * * * 2026", "61 9 * * *", "0 24 * * *", "0 9 0 * *", "0 9 * 13 *",
     "0 9 * * 8", "0 9 * * xx", "0 9 * ja *", "0 9 5-1 * *", "*/0 * * * *", "0 9 1,,2 * *",
     "@fortnightly", "", "0 9 * * m"],
)
def test_crons_a_journey_file_refuses_are_refused_here_too(cron: str) -> None:
    assert cron_problem(cron) is not None
    with pytest.raises(CronError):
        Cron.parse(cron)


@pytest.mark.parametrize(
    "cron",
    ["0 9 * * mon", "*/15 * * * *", "0 8-18/2 * * 1-5", "0 0 1 1 *", "30 6 * jan,jul sun",
     "@hourly", "@weekly", "  0   9 * *  *  ", "5/10 * * * *", "0 9 * * Tu"],
)
def test_crons_a_journey_file_accepts_are_accepted_here(cron: str) -> None:
    assert cron_problem(cron) is None
    Cron.parse(cron)


def test_errors_name_the_field_and_unknown_zones_are_refused() -> None:
    with pytest.raises(CronError, match="hour 24 is out of range 0-23"):
        Cron.parse("0 24 * * *")
    with pytest.raises(CronError, match="day of week 'xx'"):
        Cron.parse("0 9 * * xx")
    with pytest.raises(TimezoneError):
        cron_occurrences("0 9 * * *", "Europe/Bucuresti", z("2026-03-02T00:00Z"),
                         z("2026-03-03T00:00Z"))
    with pytest.raises(ValueError, match="aware"):
        Cron.parse("0 9 * * *").occurrences(ZoneInfo("UTC"), datetime(2026, 3, 2),
                                            datetime(2026, 3, 3))
