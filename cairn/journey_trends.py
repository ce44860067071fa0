"""The journeys list's figures: entries and conversions per journey over a few windows, and per
day (the small trend charts of the console's journeys list).

Two grouped counts of the entries table for every journey at once (counted by the database), so
the list costs the same with 3 journeys or 30: no journey report per journey. A conversion is an
entry left by an exit goal (`cairn.reports.converted`, the funnel's own definition), counted on
the day the entry entered, as the report counts it in its window. The journey's full funnel,
messages, steps and experiments are the journey report's (`cairn.reports.journey_report`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func, select

from cairn.reports import converted
from cairn.statistics import rate
from cairn.store.db import Store
from cairn.store.schema import Entry

__all__ = ["DayFigures", "JourneyTrend", "WindowFigures", "journey_trends"]


class WindowFigures(BaseModel):
    """Entries entered since a moment, and how many of them converted."""

    entries: int = 0
    conversions: int = 0
    conversion_rate: float | None = Field(default=None, description="conversions / entries")


class DayFigures(BaseModel):
    day: date = Field(description="a UTC day")
    entries: int = 0
    conversions: int = Field(default=0, description="of the entries entered that day")


class JourneyTrend(BaseModel):
    key: str
    windows: dict[str, WindowFigures] = Field(description="window name -> its figures")
    days: list[DayFigures] = Field(description="oldest first, days without entries included")


async def journey_trends(
    store: Store, *, windows: dict[str, datetime], days: int, now: datetime | None = None,
) -> dict[str, JourneyTrend]:
    """Journey key -> entries and conversions since each of `windows` (name -> since), and per
    UTC day over the last `days` days (today included). Journeys without entries are absent."""
    now = now or datetime.now(UTC)
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    first_moment = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    earliest = min([first_moment, *windows.values()])
    won = case((converted(), 1), else_=0)
    sums: list[Any] = []
    for since in windows.values():
        sums += [func.sum(case((Entry.entered_at >= since, 1), else_=0)),
                 func.sum(case((Entry.entered_at >= since, won), else_=0))]
    by_window: dict[str, dict[str, WindowFigures]] = {}
    by_day: dict[str, dict[date, DayFigures]] = defaultdict(dict)
    async with store.session() as s:
        rows = await s.execute(select(Entry.journey_key, *sums)
                               .where(Entry.entered_at >= earliest)
                               .group_by(Entry.journey_key))
        for key, *figures in rows.all():
            by_window[key] = {
                name: WindowFigures(entries=int(figures[2 * i] or 0),
                                    conversions=int(figures[2 * i + 1] or 0),
                                    conversion_rate=rate(int(figures[2 * i + 1] or 0),
                                                         int(figures[2 * i] or 0)))
                for i, name in enumerate(windows)}
        day = _utc_day(s.bind.dialect.name)
        rows = await s.execute(select(Entry.journey_key, day, func.count(), func.sum(won))
                               .where(Entry.entered_at >= first_moment)
                               .group_by(Entry.journey_key, day))
        for key, on, n, won_that_day in rows.all():
            on = on if isinstance(on, date) else date.fromisoformat(str(on))
            by_day[key][on] = DayFigures(day=on, entries=n, conversions=int(won_that_day or 0))
    calendar = [first + timedelta(days=i) for i in range(days)]
    return {key: JourneyTrend(key=key, windows=figures, days=[
        by_day[key].get(d) or DayFigures(day=d) for d in calendar])
        for key, figures in by_window.items()}


def _utc_day(dialect: str) -> Any:
    """The UTC calendar day of an entry, computed by the database: PostgreSQL keeps a
    `timestamptz` (its day depends on the session's zone unless asked in UTC); SQLite keeps the
    UTC wall clock as text (`UTCDateTime`), whose `date()` is the UTC day."""
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", Entry.entered_at))
    return func.date(Entry.entered_at)
