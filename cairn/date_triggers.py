"""Date and schedule triggers: when a contact's date falls due, and the events both triggers emit.

Pure functions over aware datetimes. The date sweep (`activities.sweeps`) and the simulator
(`cairn.simulation`) call the same ones, so a simulated birthday fires when the live one would, and
a sweep run twice, a retried batch and a simulation each store one event per (journey, contact,
date) or (journey, occurrence, contact).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from cairn.conditions import read_path
from cairn.durations import parse_duration, parse_time_of_day
from cairn.journey import DateAttributeTrigger
from cairn.local_time import TimezoneError, at_local, zone

SWEEP_EVENT_TYPE = "sweep"
"""The `type` of events the date and schedule sweeps store (beside track, identify, audience)."""

DATE_WINDOW = timedelta(days=1)
"""How long after its local due moment a date trigger may still fire: an hourly sweep that was
down for a while catches up, and a contact is never reached on the wrong day."""


def parse_date(value: Any) -> date | None:
    """A date attribute as a date: `1990-05-17`, an ISO datetime, or a date object."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _anniversary(original: date, year: int) -> date:
    """The date in `year` with the month and day of `original`; 29 February falls on the 28th."""
    try:
        return original.replace(year=year)
    except ValueError:
        return original.replace(year=year, day=28)


def due_date(
    trigger: DateAttributeTrigger,
    attributes: dict[str, Any],
    timezone: str | None,
    default_timezone: str,
    now: datetime,
) -> date | None:
    """The local date the trigger fires on for this contact, if it is due at `now`; else None.

    Due means: the moment `date + offset` at the trigger's local `time`, in the contact's zone
    (the journey's when the contact has none), is in `[now - 1 day, now]`. `yearly` takes the
    date's anniversaries instead of the date itself (birthdays). The offset's whole days move the
    calendar date (3 days before the 31st is the 28th at 09:00 local, whatever DST does in
    between), as `wait_until` counts them; `attribute` may be a dotted path (`contract.end`).
    """
    original = parse_date(read_path(attributes, trigger.attribute))
    if original is None:
        return None
    try:
        tz = zone(timezone, default_timezone)
    except TimezoneError:
        tz = zone(None, default_timezone)
    offset = parse_duration(trigger.offset)
    clock = parse_time_of_day(trigger.time)
    local_year = now.astimezone(tz).year
    anchors = ([_anniversary(original, year) for year in range(local_year - 1, local_year + 2)]
               if trigger.yearly else [original])
    days = timedelta(days=offset.days)
    for anchor in anchors:
        moment = at_local(anchor + days, clock, tz) + (offset - days)
        if now - DATE_WINDOW < moment <= now:
            return moment.astimezone(tz).date()
    return None


def date_trigger_event(journey_key: str, trigger: DateAttributeTrigger, contact_id: str,
                       due: date) -> tuple[str, dict[str, Any]]:
    """The message id and properties of the event a date trigger emits for a contact on `due`.

    One id per (journey, contact, date): the hourly sweeps of a day, a retried batch and a
    simulation (`cairn.simulation.engine`) each store it once.
    """
    day = due.isoformat()
    return (f"date/{journey_key}/{contact_id}/{day}",
            {"attribute": trigger.attribute, "journey": journey_key, "date": day})


def schedule_trigger_event(journey_key: str, occurrence: datetime,
                           contact_id: str) -> tuple[str, dict[str, Any]]:
    """The message id and properties of a schedule occurrence's event for one contact.

    One id per (journey, occurrence, contact): an occurrence run twice enters no one twice.
    """
    moment = occurrence.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return (f"schedule/{journey_key}/{moment}/{contact_id}",
            {"journey": journey_key, "occurrence": moment})
