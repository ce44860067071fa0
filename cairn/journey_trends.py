"""Entries per day of each journey: the small trend charts of the console's journeys list.

A count of the entries table grouped by UTC day over a window, for every journey at once (one
query), with the days without entries filled in. The funnel figures themselves (entries,
conversions and rates over a window) are the journey report's (`cairn.reports`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

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
        rows = await s.execute(select(Entry.journey_key, Entry.entered_at)
                               .where(Entry.entered_at >= since))
        for key, entered_at in rows.all():
            counts[key][entered_at.astimezone(UTC).date()] += 1
    return {key: [(first + timedelta(days=i), by_day.get(first + timedelta(days=i), 0))
                  for i in range(days)] for key, by_day in counts.items()}
