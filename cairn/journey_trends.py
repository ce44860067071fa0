"""Entries per day of each journey: the small trend charts of the console's journeys list.

A count of the entries table grouped by journey and UTC day over a window, for every journey at
once (one query, counted by the database), with the days without entries filled in. The funnel
figures themselves (entries, conversions and rates over a window) are the journey report's
(`cairn.reports`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from cairn.store.db import Store
from cairn.store.schema import Entry

__all__ = ["daily_entries"]


async def daily_entries(store: Store, *, days: int, now: datetime | None = None,
                        ) -> dict[str, list[tuple[date, int]]]:
    """Journey key -> [(day, entries)] for the `days` UTC days up to and including today."""
    now = now or datetime.now(UTC)
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    counts: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    async with store.session() as s:
        day = _utc_day(s.bind.dialect.name)
        rows = await s.execute(select(Entry.journey_key, day, func.count())
                               .where(Entry.entered_at >= since)
                               .group_by(Entry.journey_key, day))
        for key, on, n in rows.all():
            counts[key][on if isinstance(on, date) else date.fromisoformat(str(on))] += n
    return {key: [(first + timedelta(days=i), by_day.get(first + timedelta(days=i), 0))
                  for i in range(days)] for key, by_day in counts.items()}


def _utc_day(dialect: str) -> Any:
    """The UTC calendar day of an entry, computed by the database: PostgreSQL keeps a
    `timestamptz` (its day depends on the session's zone unless asked in UTC); SQLite keeps the
    UTC wall clock as text (`UTCDateTime`), whose `date()` is the UTC day."""
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", Entry.entered_at))
    return func.date(Entry.entered_at)
