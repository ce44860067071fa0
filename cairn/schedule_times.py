"""When a `schedule` trigger fires: the occurrences of a five-field cron in a time zone.

Live, a journey's `trigger.schedule` becomes a Temporal Schedule (`starter.schedules`) with the
cron and `time_zone_name`; simulations need the same instants without a Temporal server, so this
module computes them the way Temporal's scheduler does (its `compiledCalendar` in
`service/worker/scheduler/calendar.go`):

- the syntax is what `cairn.journey_checks.cron_problem` accepts: five fields (minute, hour, day of
  month, month, day of week) with lists (`1,15`), ranges (`1-5`), steps (`*/15`, `5/10`: from 5
  to the end by 10), month names (at least three letters) and weekday names (at least two), 0 or
  7 for Sunday, and `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`;
- a time matches when every field matches, the day of month *and* the day of week (Temporal
  does not take the classic cron's "either day field" rule): `0 9 1 * mon` fires only on a
  Monday that is the 1st;
- matching is literal on the wall clock, "with no special handling of DST" (the `timezone_name`
  documentation of Temporal's `ScheduleSpec`): a local time that does not exist (skipped by a
  spring-forward, e.g. 03:30 in Bucharest on 2026-03-29) does not fire that day, and one that
  happens twice (a fall-back, 03:30 on 2026-10-25) fires twice, once in each offset.

Pure functions over aware datetimes (`zoneinfo`), safe anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from cairn.local_time import zone

ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The shortcuts Temporal expands (`handlePredefinedCronStrings`), the same in journey files."""

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


class CronError(ValueError):
    """A cron expression this module (and a journey file) does not accept; says which field."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0
    """The number the first name stands for (1 for January, 0 for Sunday)."""
    prefix: int = 3
    """Names match by a prefix of at least this many letters."""


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, first_name=1, prefix=3),
    _Field("day of week", 0, 7, _WEEKDAYS, first_name=0, prefix=2),
)


def _value(text: str, spec: _Field) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    else:
        lowered = text.lower()
        found = [i for i, name in enumerate(spec.names)
                 if len(lowered) >= spec.prefix and name.startswith(lowered)]
        if not found:
            known = f" or a name such as '{spec.names[1][:3]}'" if spec.names else ""
            raise CronError(f"{spec.name} '{text}' is not a number{known}")
        value = found[0] + spec.first_name
    if not spec.low <= value <= spec.high:
        raise CronError(f"{spec.name} {text} is out of range {spec.low}-{spec.high}")
    return value


def _values(text: str, spec: _Field) -> frozenset[int]:
    """Every value one field matches."""
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) < 1:
                raise CronError(f"{spec.name} '{part}': the step after '/' must be a whole "
                                "number of at least 1")
            step = int(step_text)
        if base == "*":
            start, end = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, spec), _value(last, spec)
            if end < start:
                raise CronError(f"{spec.name} range '{base}' runs backwards (Temporal refuses "
                                "it): put the smaller end first, or join two parts with ','")
        elif base:
            start = _value(base, spec)
            end = spec.high if slash else start
        else:
            raise CronError(f"{spec.name} '{text}' has an empty part")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron: the values each field matches (weekdays 0-6, Sunday 0)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = " ".join(expression.split())
        text = ALIASES.get(text, text)
        if text.startswith("@"):
            raise CronError(f"unknown cron shortcut '{text}'; use one of {', '.join(ALIASES)}")
        fields = text.split(" ") if text else []
        if len(fields) != len(_FIELDS):
            raise CronError(f"'{expression}' has {len(fields)} field(s); a cron has five: "
                            "minute hour day-of-month month day-of-week")
        minute, hour, day, month, weekday = (
            _values(part, spec) for part, spec in zip(fields, _FIELDS, strict=True))
        return cls(expression=expression, minutes=tuple(sorted(minute)),
                   hours=tuple(sorted(hour)), days=day, months=month,
                   weekdays=frozenset(v % 7 for v in weekday))  # 7 is Sunday too

    def matches_day(self, day: date) -> bool:
        """Whether a local date matches the month, day of month and day of week fields."""
        return (day.month in self.months and day.day in self.days
                and (day.isoweekday() % 7) in self.weekdays)

    def occurrences(self, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
        """The UTC instants in `[start, end]` (both included) at which the cron fires in `tz`."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("occurrences need aware datetimes (with a UTC offset)")
        found: list[datetime] = []
        day = start.astimezone(tz).date() - timedelta(days=1)
        last = end.astimezone(tz).date() + timedelta(days=1)
        while day <= last:
            if self.matches_day(day):
                found.extend(t for t in _local_instants(day, self.hours, self.minutes, tz)
                             if start <= t <= end)
            day += timedelta(days=1)
        return found


def _local_instants(day: date, hours: tuple[int, ...], minutes: tuple[int, ...],
                    tz: ZoneInfo) -> list[datetime]:
    """The instants at which the local clock shows each hour:minute of `day`, in time order.

    A wall time in a spring-forward gap shows on no instant (it does not survive a round trip
    through UTC); one in a fall-back fold shows on two (fold 0 and fold 1 differ).
    """
    instants: set[datetime] = set()
    for hour in hours:
        for minute in minutes:
            naive = datetime(day.year, day.month, day.day, hour, minute)
            for fold in (0, 1):
                instant = naive.replace(tzinfo=tz, fold=fold).astimezone(UTC)
                if instant.astimezone(tz).replace(tzinfo=None) == naive:
                    instants.add(instant)
    return sorted(instants)


def cron_occurrences(expression: str, timezone: str, start: datetime,
                     end: datetime) -> list[datetime]:
    """When a schedule trigger (`cron` in `timezone`) fires in `[start, end]`, as UTC instants.

    Raises `CronError` for a cron a journey file would refuse, `cairn.local_time.TimezoneError`
    for an unknown zone.
    """
    return Cron.parse(expression).occurrences(zone(timezone), start, end)


__all__ = ["ALIASES", "Cron", "CronError", "cron_occurrences"]
