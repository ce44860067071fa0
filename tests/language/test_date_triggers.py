"""When a date trigger is due: calendar days across a DST change, nested attributes."""

from __future__ import annotations

from datetime import UTC, date, datetime

from cairn.date_triggers import due_date
from cairn.journey import DateAttributeTrigger


def test_days_before_a_date_count_calendar_days_across_the_dst_change() -> None:
    trigger = DateAttributeTrigger(attribute="due", offset="-3d", time="09:00")
    attributes = {"due": "2026-03-31"}  # Bucharest moves to summer time on 29 March
    # 09:00 local on 28 March is 07:00Z (still winter time): not 06:00Z (08:00 local).
    assert due_date(trigger, attributes, "Europe/Bucharest", "UTC",
                    datetime(2026, 3, 28, 6, 30, tzinfo=UTC)) is None
    assert due_date(trigger, attributes, "Europe/Bucharest", "UTC",
                    datetime(2026, 3, 28, 7, 0, tzinfo=UTC)) == date(2026, 3, 28)


def test_a_dotted_attribute_path_reads_a_nested_date() -> None:
    trigger = DateAttributeTrigger(attribute="contract.end", time="09:00")
    attributes = {"contract": {"end": "2026-05-10"}}
    assert due_date(trigger, attributes, None, "UTC",
                    datetime(2026, 5, 10, 9, 0, tzinfo=UTC)) == date(2026, 5, 10)
    assert due_date(trigger, {"contract": {}}, None, "UTC",
                    datetime(2026, 5, 10, 9, 0, tzinfo=UTC)) is None
