"""What changed between two versions of a journey, the versions listed, and entries and
conversions per window and per day (the console's journey page and its journeys list)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from cairn.journey_trends import journey_trends
from cairn.journey_versions import journey_versions, version_changes
from cairn.reports import journey_report
from cairn.store.db import Store
from tests.console.seed import KEY, seed

BASE = {"key": "k", "name": "K", "trigger": {"event": "go"}, "start": "a",
        "steps": {"a": {"wait": "1h", "next": "b"}, "b": {"score": {"add": 1}, "next": "end"}}}


def test_version_changes_names_each_part_and_step_that_differs() -> None:
    assert version_changes(BASE, BASE) == []
    new = {**BASE, "name": "K2", "trigger": {"event": "went"},
           "steps": {"a": {"wait": "2h", "next": "c"}, "c": {"score": {"add": 2},
                                                             "next": "end"}}}
    assert version_changes(BASE, new) == [
        "name changed", "trigger changed", "step a changed: next, wait", "step c added",
        "step b removed"]


async def test_versions_oldest_first_and_entries_per_day(store: Store) -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    await seed(store, now)
    versions = await journey_versions(store, KEY)
    assert [v.version for v in versions] == [1, 2]
    assert version_changes(versions[0].definition, versions[1].definition) == [
        "step wait_2h changed: wait"]
    assert await journey_versions(store, "nothing") == []

    week, day = now - timedelta(days=7), now - timedelta(days=1)
    trend = (await journey_trends(store, windows={"7d": week, "1d": day}, days=7,
                                  now=now))[KEY]
    days = trend.days
    assert len(days) == 7 and days[-1].day == date(2026, 3, 10)
    assert days[0].day == date(2026, 3, 10) - timedelta(days=6)
    # seed: ten entries at 0..4 days back (two a day), three hours before `now`; ana (0 days
    # back), bob (1) and cy (2) converted
    assert [(d.entries, d.conversions) for d in days] == [
        (0, 0), (0, 0), (2, 0), (2, 0), (2, 1), (2, 1), (2, 1)]
    assert (trend.windows["7d"].entries, trend.windows["7d"].conversions) == (10, 3)
    assert (trend.windows["1d"].entries, trend.windows["1d"].conversions) == (2, 1)
    # The same figures as the journey report's funnel over the same window.
    for since, figures in ((week, trend.windows["7d"]), (day, trend.windows["1d"])):
        funnel = (await journey_report(store, KEY, since=since, now=now)).funnel
        assert (figures.entries, figures.conversions, figures.conversion_rate) == (
            funnel.entries, funnel.conversions, funnel.conversion_rate)
    two_days = await journey_trends(store, windows={}, days=2, now=now)
    assert sum(d.entries for d in two_days[KEY].days) == 4
