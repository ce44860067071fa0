"""What changed between two versions of a journey, the versions listed, and entries per day
(the console's journey page and its journeys list)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from cairn.journey_trends import daily_entries
from cairn.journey_versions import journey_versions, version_changes
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

    trend = await daily_entries(store, days=7, now=now)
    days = trend[KEY]
    assert len(days) == 7 and days[-1][0] == date(2026, 3, 10)
    assert days[0][0] == date(2026, 3, 10) - timedelta(days=6)
    # seed: ten entries at 0..4 days back (two a day), three hours before `now`
    assert [n for _, n in days] == [0, 0, 2, 2, 2, 2, 2]
    assert sum(n for _, n in (await daily_entries(store, days=2, now=now))[KEY]) == 4
