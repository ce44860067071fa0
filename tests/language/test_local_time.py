"""Local times land on the right instant across time zones and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from cairn.durations import DurationError, format_duration, parse_duration, parse_time_of_day
from cairn.local_time import (
    TimezoneError,
    at_local,
    next_window_start,
    quiet_hours_end,
    zone,
)

BUCHAREST = "Europe/Bucharest"


def test_ten_oclock_moves_with_daylight_saving() -> None:
    # Bucharest switches from UTC+2 to UTC+3 on 2026-03-29.
    assert at_local(date(2026, 3, 28), time(10), zone(BUCHAREST)) == datetime(
        2026, 3, 28, 8, tzinfo=UTC
    )
    assert at_local(date(2026, 3, 30), time(10), zone(BUCHAREST)) == datetime(
        2026, 3, 30, 7, tzinfo=UTC
    )


def test_a_time_skipped_by_spring_forward_moves_forward() -> None:
    # 03:30 does not exist in Bucharest on 2026-03-29 (03:00 -> 04:00): it becomes 04:30 local.
    assert at_local(date(2026, 3, 29), time(3, 30), zone(BUCHAREST)) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_quiet_hours_across_midnight() -> None:
    start, end = time(21), time(8)
    late = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 22:00 in Bucharest
    assert quiet_hours_end(late, BUCHAREST, start, end) == datetime(2026, 3, 3, 6, tzinfo=UTC)
    early = datetime(2026, 3, 3, 4, 0, tzinfo=UTC)  # 06:00 in Bucharest
    assert quiet_hours_end(early, BUCHAREST, start, end) == datetime(2026, 3, 3, 6, tzinfo=UTC)
    noon = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    assert quiet_hours_end(noon, BUCHAREST, start, end) is None


def test_next_window_on_allowed_days() -> None:
    friday_evening = datetime(2026, 3, 6, 18, 0, tzinfo=UTC)
    opens = next_window_start(friday_evening, BUCHAREST, ["mon", "tue"], time(9), time(17))
    assert opens == datetime(2026, 3, 9, 7, 0, tzinfo=UTC)  # Monday 09:00 local
    inside = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert next_window_start(inside, BUCHAREST, ["mon"], time(9), time(17)) == inside


def test_contact_without_zone_uses_the_default() -> None:
    moment = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
    assert quiet_hours_end(moment, None, time(21), time(8), default_tz="UTC") == datetime(
        2026, 3, 3, 8, tzinfo=UTC
    )


def test_unknown_zone_is_named() -> None:
    with pytest.raises(TimezoneError, match="Europe/Bucuresti"):
        zone("Europe/Bucuresti")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("2h", timedelta(hours=2)), ("1h30m", timedelta(minutes=90)),
     ("3w", timedelta(weeks=3)), ("-10d", timedelta(days=-10)), ("500ms", timedelta(seconds=0.5))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["2 hours", "h", "10", "", "1y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(DurationError, match="bad duration"):
        parse_duration(text)


def test_duration_round_trip_and_times_of_day() -> None:
    assert format_duration(timedelta(days=1, hours=2)) == "1d2h"
    assert parse_time_of_day("09:30") == time(9, 30)
    with pytest.raises(DurationError, match="24-hour"):
        parse_time_of_day("25:00")
