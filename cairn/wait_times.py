"""When a wait on the contact's own dates and hours ends: `wait_until` a date attribute,
`wait_for_window` in the contact's time zone.

Pure functions of the definition, the contact's values and the journey's time. The `plan_wait`
activity calls them with the contact as stored (so neither the date nor the time zone enters the
run's history: only the deadline does); runs started before that activity existed call them in
the workflow, on the snapshot `load_contact` returned.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from cairn.conditions import read_path
from cairn.durations import parse_duration, parse_time_of_day
from cairn.journey import WaitUntil, Window
from cairn.local_time import at_local, next_window_start, zone


def date_of(value: object) -> date | datetime | None:
    """An ISO date or date-time text as a date or datetime (None for anything else)."""
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


def attribute_deadline(
    spec: WaitUntil, attributes: dict[str, Any], timezone: str | None, default_timezone: str,
) -> datetime | None:
    """The end of a `wait_until` on a date attribute; None when it is missing or not a date."""
    assert spec.attribute is not None
    tz = zone(timezone, default_timezone)
    anchor = date_of(read_path(attributes, spec.attribute))
    if anchor is None:
        return None
    offset = parse_duration(spec.offset)
    if spec.time is not None:
        day = anchor if not isinstance(anchor, datetime) else anchor.astimezone(tz).date()
        local_day = (datetime.combine(day, datetime.min.time()) + offset).date()
        return at_local(local_day, parse_time_of_day(spec.time), tz)
    if isinstance(anchor, datetime):
        moment = anchor if anchor.tzinfo else anchor.replace(tzinfo=tz)
        return moment + offset
    return at_local(anchor, datetime.min.time(), tz) + offset


def window_deadline(
    window: Window, now: datetime, timezone: str | None, default_timezone: str,
) -> datetime:
    """The start of the next allowed window in the contact's time zone (`now` when inside one)."""
    return next_window_start(
        now, timezone, window.days, parse_time_of_day(window.from_),
        parse_time_of_day(window.to), default_timezone,
    )
