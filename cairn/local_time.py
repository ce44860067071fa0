"""Wall-clock time in a contact's time zone: quiet hours, allowed windows, local times of day.

Pure functions over aware datetimes, safe in workflow code. Local times are resolved with
`zoneinfo`, so daylight-saving changes land on the right instant: 10:00 in Bucharest is 08:00Z
in winter and 07:00Z in summer; a local time that does not exist (skipped by a spring-forward)
moves forward by the gap, and an ambiguous one takes its first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TimezoneError(ValueError):
    """An IANA time zone name that is not known (e.g. 'Europe/Bucuresti')."""


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The contact's zone, or the journey's default when the contact has none."""
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise TimezoneError(
            f"unknown time zone {name or default!r}: use an IANA name such as 'Europe/Bucharest'"
        ) from error


def is_timezone(name: str) -> bool:
    try:
        zone(name)
    except TimezoneError:
        return False
    return True


def at_local(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local date and time, handling gaps and folds of daylight saving."""
    naive = datetime.combine(day, clock)
    local = naive.replace(tzinfo=tz, fold=0)
    # A time inside a spring-forward gap does not survive a round trip through UTC.
    round_trip = local.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if round_trip != naive:
        gap = local.replace(fold=1).utcoffset() - local.replace(fold=0).utcoffset()  # type: ignore[operator]
        local = (naive + abs(gap)).replace(tzinfo=tz)
    return local.astimezone(UTC)


def in_span(clock: time, start: time, end: time) -> bool:
    """Whether a local time is in [start, end), where the span may cross midnight."""
    if start == end:
        return False
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def quiet_hours_end(now: datetime, tz_name: str | None, start: time, end: time,
                    default_tz: str = "UTC") -> datetime | None:
    """When the quiet hours that `now` falls in end (UTC), or None if `now` is not quiet."""
    tz = zone(tz_name, default_tz)
    local = now.astimezone(tz)
    if not in_span(local.time(), start, end):
        return None
    day = local.date()
    if start > end and local.time() >= start:
        day = day + timedelta(days=1)
    return at_local(day, end, tz)


def next_window_start(now: datetime, tz_name: str | None, days: Sequence[str], start: time,
                      end: time, default_tz: str = "UTC") -> datetime:
    """The first moment at or after `now` inside an allowed window (days and local hours).

    Returns `now` itself when it is already inside. A window that crosses midnight belongs to
    the day it starts on.
    """
    tz = zone(tz_name, default_tz)
    local = now.astimezone(tz)
    allowed = {WEEKDAY_NAMES.index(d) for d in days}
    for offset in range(-1, 9):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in allowed:
            continue
        opens = at_local(day, start, tz)
        closes_day = day + timedelta(days=1) if end <= start else day
        closes = at_local(closes_day, end, tz)
        if opens <= now < closes:
            return now
        if opens > now:
            return opens
    raise ValueError(f"no allowed window in the week after {now.isoformat()}")
