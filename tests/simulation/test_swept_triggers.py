"""Date and schedule triggers in simulations: the simulator emits what the live sweeps emit.

No scenario here plays `date_attribute_reached` or `schedule_fired`: the simulator judges the
hourly date sweep with `cairn.date_triggers.due_date` on the contact as stored, and fires a
schedule at every occurrence of its cron (`cairn.schedule_times`) for a contact in its segment.
Europe/Bucharest is UTC+2 in winter and UTC+3 in summer (changes on 2026-03-29 and 2026-10-25).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cairn.date_triggers import due_date
from cairn.journey import Journey
from starter.testing import SimulationError, SimulationReport, Simulator, parse_scenario


def journey(key: str, trigger: dict[str, Any], template: str) -> Journey:
    return Journey.model_validate({
        "key": key,
        "name": key.replace("-", " ").capitalize(),
        "trigger": trigger,
        "steps": {"send_it": {"send": {"channel": "email", "template": template}, "next": "end"}},
        "templates": {template: {"email": {"subject": "Hi {{ contact.first_name }}",
                                           "body": "For {{ event.properties.journey }}"}}},
    })


BIRTHDAY = journey(
    "birthday-greeting",
    {"date_attribute": {"attribute": "birthday", "yearly": True, "time": "10:00"}},
    "birthday")
REMINDER = journey(
    "payment-reminder",
    {"date_attribute": {"attribute": "due_date", "offset": "-3d", "time": "09:00"}},
    "payment-due")
WEEKLY = journey(
    "weekly-progress",
    {"schedule": {"cron": "0 17 * * 5", "segment": "students", "timezone": "Europe/Bucharest"}},
    "weekly-progress")
DAILY_TO_ALL = journey(
    "daily-digest", {"schedule": {"cron": "0 9 * * *", "timezone": "UTC"}}, "daily-digest")


def contact(attributes: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "ana", "timezone": "Europe/Bucharest", "email": "ana@example.com",
            "consent": {"marketing": True},
            "attributes": {"first_name": "Ana", **(attributes or {})}, **extra}


def scenario(now: str, until: str, *events: dict[str, Any], **who: Any) -> Any:
    return parse_scenario({"now": now, "contact": contact(**who), "events": list(events),
                           "until": until})


def send_times(report: SimulationReport) -> list[str]:
    """When each send went, to the second (UTC), as `cairn simulate --json` prints it."""
    return [item["at"] for item in report.model_dump(mode="json")["sends"]]


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- date_attribute


@pytest.mark.parametrize(
    ("timezone", "sent_at"),
    [
        ("Europe/Bucharest", "2026-03-05T08:00:00Z"),   # 10:00 EET
        ("America/New_York", "2026-03-05T15:00:00Z"),   # 10:00 EST
        # 10:00 IST is 04:30Z; the hourly sweep (on the hour, UTC) finds it due at 05:00Z.
        ("Asia/Kolkata", "2026-03-05T05:00:00Z"),
    ],
)
async def test_birthday_greeting_goes_at_ten_local_time_without_a_played_event(
    simulator: Simulator, timezone: str, sent_at: str
) -> None:
    report = await simulator.run(BIRTHDAY, scenario(
        "2026-03-02T09:00:00Z", "+7d", timezone=timezone,
        attributes={"birthday": "1990-03-05"}))
    assert report.outcome == "completed", report.path
    assert report.steps == ["send_it"]
    assert [(s.template, s.status) for s in report.sends] == [("birthday", "sent")]
    assert send_times(report) == [sent_at]
    # The same moment the live sweep's own function names (first hourly run that finds it due).
    trigger = BIRTHDAY.trigger.date_attribute
    assert trigger is not None
    first_run = next(
        run for hour in range(7 * 24)
        for run in [z("2026-03-02T10:00:00Z") + timedelta(hours=hour)]
        if due_date(trigger, {"birthday": "1990-03-05"}, timezone, "UTC", run) is not None)
    assert first_run == z(sent_at)


async def test_an_identify_moving_the_birthday_moves_the_greeting(simulator: Simulator) -> None:
    report = await simulator.run(BIRTHDAY, scenario(
        "2026-03-02T09:00:00Z", "+7d",
        {"at": "+1d", "type": "identify", "traits": {"birthday": "1990-03-07"}},
        attributes={"birthday": "1990-03-05"}))
    assert report.outcome == "completed", report.path
    assert send_times(report) == ["2026-03-07T08:00:00Z"]


async def test_a_birthday_every_year_enters_every_year(simulator: Simulator) -> None:
    report = await simulator.run(BIRTHDAY, scenario(
        "2026-03-02T09:00:00Z", "2028-03-10T00:00:00Z", attributes={"birthday": "1990-03-05"}))
    assert report.outcome == "completed", report.path
    assert report.steps == ["send_it", "send_it", "send_it"]
    # Bucharest is on EET (UTC+2) every 5 March.
    assert send_times(report) == ["2026-03-05T08:00:00Z", "2027-03-05T08:00:00Z",
                                  "2028-03-05T08:00:00Z"]


async def test_a_birthday_already_greeted_before_now_is_not_greeted_again(
    simulator: Simulator,
) -> None:
    # The sweep at 08:00Z emitted today's greeting; a scenario starting at 08:30Z comes after.
    report = await simulator.run(BIRTHDAY, scenario(
        "2026-03-05T08:30:00Z", "+2d", attributes={"birthday": "1990-03-05"}))
    assert report.outcome == "not_entered"
    assert report.sends == []
    assert report.path[0].note == (
        "not entered: the date sweep found trigger.date_attribute birthday due on no day "
        "between 2026-03-05T08:30:00Z and 2026-03-07T08:30:00Z (the contact's birthday: "
        "'1990-03-05')")


async def test_a_scenario_playing_the_event_by_hand_enters_once(simulator: Simulator) -> None:
    by_hand = {"at": "2026-03-04T12:00:00Z", "event": "date_attribute_reached",
               "properties": {"attribute": "birthday", "journey": "birthday-greeting",
                              "date": "2026-03-04"}}
    report = await simulator.run(BIRTHDAY, scenario(
        "2026-03-02T09:00:00Z", "+7d", by_hand, attributes={"birthday": "1990-03-05"}))
    assert report.outcome == "completed", report.path
    assert report.steps == ["send_it"]  # not again on the 5th: the sweep is not simulated
    assert send_times(report) == ["2026-03-04T12:00:00Z"]


@pytest.mark.parametrize(
    ("due", "sent_at"),
    [
        ("2026-03-20", "2026-03-17T07:00:00Z"),   # 09:00 EET on the 17th
        ("2026-04-20", "2026-04-17T06:00:00Z"),   # 09:00 EEST on the 17th
    ],
)
async def test_payment_reminder_three_days_before_the_due_date_at_nine(
    simulator: Simulator, due: str, sent_at: str
) -> None:
    start = z(sent_at) - timedelta(days=6)
    report = await simulator.run(REMINDER, scenario(
        start.isoformat(), "+10d", attributes={"due_date": due}))
    assert report.outcome == "completed", report.path
    assert [(s.template, s.status) for s in report.sends] == [("payment-due", "sent")]
    assert send_times(report) == [sent_at]


async def test_a_due_date_changed_before_the_reminder_moves_it(simulator: Simulator) -> None:
    report = await simulator.run(REMINDER, scenario(
        "2026-04-10T00:00:00Z", "+20d",
        {"at": "+2d", "type": "identify", "traits": {"due_date": "2026-04-25"}},
        attributes={"due_date": "2026-04-20"}))
    assert send_times(report) == ["2026-04-22T06:00:00Z"]


# --------------------------------------------------------------------------- schedule


def students(folder: Path) -> Path:
    """A journeys folder whose `students` segment holds whoever enrolled in a course."""
    (folder / "segments").mkdir()
    (folder / "segments" / "students.yaml").write_text(yaml.safe_dump({
        "key": "students", "name": "Students", "rule": {"has_done": {"event": "course_enrolled"}},
    }))
    return folder


ENROLLED = {"event": "course_enrolled", "properties": {"course": "python-101"}}


@pytest.mark.parametrize(
    ("now", "enrolled", "until", "sent"),
    [
        # Enrolled on Saturday the 21st: not a student at the first Friday's occurrence.
        ("2026-03-16T00:00:00Z", "2026-03-21T10:00:00Z", "2026-04-06T00:00:00Z",
         ["2026-03-27T15:00:00Z", "2026-04-03T14:00:00Z"]),   # 17:00 EET, then 17:00 EEST
        ("2026-10-12T00:00:00Z", "2026-10-12T10:00:00Z", "2026-11-02T00:00:00Z",
         ["2026-10-16T14:00:00Z", "2026-10-23T14:00:00Z", "2026-10-30T15:00:00Z"]),
    ],
    ids=["spring", "autumn"],
)
async def test_weekly_schedule_sends_each_friday_at_five_to_a_member(
    simulator: Simulator, tmp_path: Path, now: str, enrolled: str, until: str, sent: list[str]
) -> None:
    report = await simulator.run(WEEKLY, scenario(now, until, {**ENROLLED, "at": enrolled}),
                                 audience_folder=students(tmp_path))
    assert report.outcome == "completed", report.path
    assert report.steps == ["send_it"] * len(sent)
    assert [(s.template, s.status) for s in report.sends] == [("weekly-progress", "sent")] * len(
        sent)
    assert send_times(report) == sent


async def test_weekly_schedule_sends_nothing_to_a_non_member(
    simulator: Simulator, tmp_path: Path
) -> None:
    report = await simulator.run(WEEKLY, scenario(
        "2026-03-16T00:00:00Z", "2026-04-06T00:00:00Z",
        {"at": "+1h", "event": "lesson_viewed"}), audience_folder=students(tmp_path))
    assert report.outcome == "not_entered"
    assert report.sends == []
    assert report.path[0].note == (
        "not entered: trigger.schedule '0 17 * * 5' (Europe/Bucharest) fired 3 time(s) between "
        "2026-03-16T00:00:00Z and 2026-04-06T00:00:00Z, and the contact was in segment students "
        "at none of them")


async def test_a_contact_listed_in_the_segment_gets_the_schedule_without_a_folder(
    simulator: Simulator,
) -> None:
    report = await simulator.run(WEEKLY, scenario(
        "2026-03-16T00:00:00Z", "2026-03-28T00:00:00Z", segments=["students"]))
    assert send_times(report) == ["2026-03-20T15:00:00Z", "2026-03-27T15:00:00Z"]


async def test_a_schedule_without_a_segment_enters_every_contact(simulator: Simulator) -> None:
    # `now` itself is an occurrence; so would `until` be, but the clock stops there.
    report = await simulator.run(DAILY_TO_ALL, scenario("2026-03-02T09:00:00Z", "+50h"))
    assert report.outcome == "completed", report.path
    assert report.steps == ["send_it"] * 3
    assert send_times(report) == ["2026-03-02T09:00:00Z", "2026-03-03T09:00:00Z",
                                  "2026-03-04T09:00:00Z"]


async def test_a_played_schedule_event_replaces_the_simulated_occurrences(
    simulator: Simulator,
) -> None:
    played = {"at": "2026-03-03T12:00:00Z", "event": "schedule_fired",
              "properties": {"journey": "daily-digest", "occurrence": "2026-03-03T12:00:00Z"}}
    report = await simulator.run(DAILY_TO_ALL, scenario("2026-03-02T09:00:00Z", "+2d", played))
    assert send_times(report) == ["2026-03-03T12:00:00Z"]
    assert report.steps == ["send_it"]


async def test_a_cron_firing_too_often_for_the_span_is_refused(simulator: Simulator) -> None:
    every_minute = journey("every-minute", {"schedule": {"cron": "* * * * *"}}, "tick")
    with pytest.raises(SimulationError, match=r"fires 10081 times between now and until"):
        await simulator.run(every_minute, scenario("2026-03-02T09:00:00Z", "+7d"))
