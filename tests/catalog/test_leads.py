"""Catalog: the lead-management journeys (SALESmanago and the front-/back-end automation article).

whitepaper-call-list, sales-alert-on-score, lead-nurturing, url-visit-segments and form-reply,
each played by the simulator on the module's time-skipping server with the real interpreter,
activities, ingest and router. Segments and scoring rules come from the catalog files, copied into
a folder of their own per test (`audience_folder`), so the tests exercise the very definitions
that ship and nothing another journey adds to `journeys/segments` or `journeys/scoring`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cairn.journey import Journey
from cairn.journey_files import load_journey, read_template, validate_paths
from cairn.templates import message_scope, render
from starter.testing import SimulationReport, Simulator, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "journeys"
NOW = "2026-03-02T09:00:00Z"  # a Monday
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CONTACT: dict[str, Any] = {
    "id": "lead-1",
    "timezone": "Europe/Warsaw",
    "email": "ana@example.com",
    "phone": "+48600100200",
    "consent": {"marketing": True},
    "attributes": {"first_name": "Ana", "company": "Acme"},
}


def scenario(*events: dict[str, Any], until: str, **contact: Any) -> dict[str, Any]:
    return {"now": NOW, "contact": {**CONTACT, **contact}, "events": list(events),
            "until": until}


def near(moment: datetime | None, expected: datetime) -> bool:
    """Real processing time (milliseconds) runs on the simulated clock too."""
    return moment is not None and expected <= moment < expected + timedelta(minutes=1)


def audience(folder: Path, segments: Sequence[str], scoring: Sequence[str] = ()) -> Path:
    """A journeys folder holding only these catalog segment and scoring files."""
    (folder / "segments").mkdir()
    (folder / "scoring").mkdir()
    for name in segments:
        shutil.copy(CATALOG / "segments" / f"{name}.yaml", folder / "segments")
    for name in scoring:
        shutil.copy(CATALOG / "scoring" / f"{name}.yaml", folder / "scoring")
    return folder


def sends(report: SimulationReport) -> list[tuple[str | None, str | None, str | None, str]]:
    return [(s.step, s.channel, s.template, s.status) for s in report.sends]


def journey(key: str) -> Journey:
    return load_journey(CATALOG / f"{key}.yaml")


def test_the_lead_journeys_validate() -> None:
    files = [CATALOG / f"{key}.yaml" for key in (
        "whitepaper-call-list", "sales-alert-on-score", "lead-nurturing", "url-visit-segments",
        "form-reply",
    )]
    assert validate_paths(files) == []


# --------------------------------------------------------------------------- whitepaper-call-list

CALL_LIST = "whitepaper-call-list"


def morning(day: int) -> dict[str, Any]:
    """The schedule's occurrence at 08:00 UTC on 2026-03-<day>, as the scheduled entry emits it."""
    at = f"2026-03-{day:02d}T08:00:00Z"
    return {"at": at, "event": "schedule_fired",
            "properties": {"journey": CALL_LIST, "occurrence": at}}


def download(at: str, title: str) -> dict[str, Any]:
    return {"at": at, "event": "whitepaper_downloaded", "properties": {"title": title}}


async def test_two_whitepapers_put_the_contact_on_the_next_call_list_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, ["whitepaper_readers"])
    report = await simulator.run(journey(CALL_LIST), parse_scenario(scenario(
        download("+1h", "Marketing automation 101"),
        download("+4h", "Lead scoring in practice"),
        morning(3),
        morning(4),  # still in the segment, but nothing new since yesterday's list
        until="+3d",
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert report.steps == ["qualifies", "call_task", "qualifies"]
    assert report.path[0].note.startswith("then")
    assert report.path[2].note.startswith("else")
    (task,) = report.tasks
    assert (task.queue, task.title) == ("sales", "Call Ana: downloaded 2+ whitepapers")
    at_eight = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    assert near(task.at, at_eight)
    assert near(task.due, at_eight + timedelta(hours=8))
    assert report.sends == [] and report.alerts == []


async def test_one_whitepaper_is_not_enough(simulator: Simulator, tmp_path: Path) -> None:
    folder = audience(tmp_path, ["whitepaper_readers"])
    report = await simulator.run(journey(CALL_LIST), parse_scenario(scenario(
        download("+1h", "Marketing automation 101"), morning(3), until="+1d",
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert report.steps == ["qualifies"]
    assert report.path[0].note.startswith("else")
    assert "whitepaper_readers" in report.path[0].note
    assert report.tasks == []


async def test_downloads_more_than_30_days_apart_do_not_count_together(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, ["whitepaper_readers"])
    report = await simulator.run(journey(CALL_LIST), parse_scenario(scenario(
        download("+0s", "Marketing automation 101"),
        download("+31d", "Lead scoring in practice"),  # 2026-04-02 09:00
        {**morning(1), "at": "2026-04-03T08:00:00Z",
         "properties": {"journey": CALL_LIST, "occurrence": "2026-04-03T08:00:00Z"}},
        until="+32d",
    )), audience_folder=folder)
    assert report.steps == ["qualifies"]
    assert report.tasks == []


# --------------------------------------------------------------------------- sales-alert-on-score

SALES_ALERT = "sales-alert-on-score"
SCORING = {"segments": ["inactive_30d"], "scoring": ["engagement"]}  # engagement's decay needs it


def scored(at: str, event: str) -> dict[str, Any]:
    """engagement.yaml: email_clicked and form_submitted +10, push_dismissed -10."""
    return {"at": at, "event": event, "properties": {"form": "newsletter"}
            if event == "form_submitted" else {}}


async def test_crossing_50_alerts_sales_once_and_staying_above_does_not(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **SCORING)
    report = await simulator.run(journey(SALES_ALERT), parse_scenario(scenario(
        scored("+1h", "email_clicked"),     # 45
        scored("+2h", "form_submitted"),    # 55: crosses 50
        scored("+1d", "email_clicked"),     # 65: still above, no crossing
        scored("+2d", "form_submitted"),    # 75
        until="+3d", scores={"global": 35},
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert report.steps == ["alert_sales", "call_task"]
    crossed = START + timedelta(hours=2)
    assert [(a.step, a.to, a.template, a.status) for a in report.alerts] == [
        ("alert_sales", "slack:#sales", "sales-hot-lead", "recorded")]
    assert near(report.alerts[0].at, crossed)
    (task,) = report.tasks
    assert (task.queue, task.title) == ("sales", "Call Ana: lead score 55")
    assert near(task.at, crossed)
    assert near(task.due, crossed + timedelta(hours=4))


async def test_a_dip_and_back_within_a_week_is_not_alerted_again(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **SCORING)
    report = await simulator.run(journey(SALES_ALERT), parse_scenario(scenario(
        scored("+1h", "form_submitted"),    # 55: crosses up, alert
        scored("+1d", "push_dismissed"),    # 45: crosses down, not this journey's trigger
        scored("+2d", "email_clicked"),     # 55: up again within 7 days, refused
        scored("+8d", "push_dismissed"),    # 45
        scored("+9d", "email_clicked"),     # 55: up again after a week, alert
        until="+10d", scores={"global": 45},
    )), audience_folder=folder)
    assert report.steps == ["alert_sales", "call_task"] * 2
    assert [a.at.date().isoformat() for a in report.alerts] == ["2026-03-02", "2026-03-11"]
    assert near(report.alerts[0].at, START + timedelta(hours=1))
    assert near(report.alerts[1].at, START + timedelta(days=9))
    assert [t.title for t in report.tasks] == ["Call Ana: lead score 55"] * 2


async def test_a_score_under_the_threshold_alerts_nobody(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **SCORING)
    report = await simulator.run(journey(SALES_ALERT), parse_scenario(scenario(
        scored("+1h", "email_clicked"), scored("+2h", "form_submitted"),   # 40
        until="+1d", scores={"global": 20},
    )), audience_folder=folder)
    assert report.outcome == "not_entered"
    assert report.alerts == [] and report.tasks == []


# --------------------------------------------------------------------------- lead-nurturing

NURTURE = "lead-nurturing"
NURTURE_AUDIENCE = {"segments": ["cold_leads", "inactive_30d", "pricing_visitors"],
                    "scoring": ["engagement"]}


def stage(at: str, name: str) -> dict[str, Any]:
    return {"at": at, "type": "identify", "traits": {"sales_stage": name}}


async def test_a_cold_lead_gets_three_drips_over_two_weeks(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **NURTURE_AUDIENCE)
    report = await simulator.run(journey(NURTURE), parse_scenario(scenario(
        stage("+0s", "awareness"), until="+16d", scores={"global": 10},
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert report.steps == [
        "wait_day_1", "stage_1", "stage_1_consideration", "awareness_1",
        "wait_day_8", "stage_2", "stage_2_consideration", "awareness_2",
        "wait_day_15", "stage_3", "stage_3_consideration", "awareness_3",
    ]
    assert sends(report) == [
        ("awareness_1", "email", "nurture-awareness-1", "sent"),
        ("awareness_2", "email", "nurture-awareness-2", "sent"),
        ("awareness_3", "email", "nurture-awareness-3", "sent"),
    ]
    for send, day in zip(report.sends, (1, 8, 15), strict=True):
        assert near(send.at, START + timedelta(days=day)), (send.step, send.at)


async def test_each_drip_follows_the_stage_the_lead_is_in_when_it_goes_out(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **NURTURE_AUDIENCE)
    report = await simulator.run(journey(NURTURE), parse_scenario(scenario(
        stage("+0s", "awareness"),
        stage("+3d", "consideration"),
        stage("+10d", "decision"),
        until="+16d", scores={"global": 10},
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert sends(report) == [
        ("awareness_1", "email", "nurture-awareness-1", "sent"),
        ("consideration_2", "email", "nurture-consideration-2", "sent"),
        ("decision_3", "email", "nurture-decision-3", "sent"),
    ]
    assert report.steps[-2:] == ["stage_3", "decision_3"]
    assert near(report.sends[2].at, START + timedelta(days=15))


async def test_the_drip_stops_when_the_score_crosses_50(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **NURTURE_AUDIENCE)
    report = await simulator.run(journey(NURTURE), parse_scenario(scenario(
        stage("+0s", "decision"),
        scored("+2d", "email_clicked"),     # 45
        scored("+3d", "form_submitted"),    # 55: hot
        until="+16d", scores={"global": 35},
    )), audience_folder=folder)
    assert report.outcome == "hot"
    assert sends(report) == [("decision_1", "email", "nurture-decision-1", "sent")]
    assert report.steps[-1] == "wait_day_8"


async def test_a_demo_request_ends_the_drip(simulator: Simulator, tmp_path: Path) -> None:
    folder = audience(tmp_path, **NURTURE_AUDIENCE)
    report = await simulator.run(journey(NURTURE), parse_scenario(scenario(
        stage("+0s", "consideration"),
        {"at": "+9d", "event": "demo_requested"},
        until="+16d", scores={"global": 0},
    )), audience_folder=folder)
    assert report.outcome == "demo_requested"
    assert [s.template for s in report.sends] == ["nurture-consideration-1",
                                                  "nurture-consideration-2"]


async def test_a_lead_leaving_the_pipeline_leaves_the_drip(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **NURTURE_AUDIENCE)
    report = await simulator.run(journey(NURTURE), parse_scenario(scenario(
        stage("+0s", "awareness"), stage("+5d", "won"), until="+16d",
    )), audience_folder=folder)
    assert report.outcome == "left_cold_leads"
    assert [s.template for s in report.sends] == ["nurture-awareness-1"]


async def test_a_lead_already_hot_is_not_nurtured(simulator: Simulator, tmp_path: Path) -> None:
    folder = audience(tmp_path, **NURTURE_AUDIENCE)
    report = await simulator.run(journey(NURTURE), parse_scenario(scenario(
        stage("+0s", "decision"), until="+2d", scores={"global": 60},
    )), audience_folder=folder)
    assert report.outcome == "not_entered"
    assert report.sends == []


@pytest.mark.parametrize(("segments", "expected", "absent"), [
    (["cold_leads", "pricing_visitors"], "https://www.example.com/pricing#compare",
     "security-pack"),
    (["cold_leads"], "Unsubscribe: https://u.example/x", "pricing#compare"),
])
def test_nurture_emails_mention_what_the_lead_was_reading(
    segments: list[str], expected: str, absent: str
) -> None:
    for stage_name in ("awareness", "consideration", "decision"):
        for number in (1, 2, 3):
            name = f"nurture-{stage_name}-{number}"
            parts, problems = read_template(CATALOG / "templates" / f"{name}.yaml", name)
            assert parts is not None and not problems, problems
            scope = message_scope({"first_name": "Ana", "segments": segments}, None, None)
            scope["unsubscribe_url"] = "https://u.example/x"
            body = render(name, parts, "email", scope)["body"]
            assert body.startswith("Hi Ana,")
            assert expected in body and absent not in body, name


# --------------------------------------------------------------------------- url-visit-segments

URL_VISITS = "url-visit-segments"
URL_AUDIENCE = {"segments": ["pricing_visitors", "enterprise_interest", "integration_readers"]}


def visit(at: str, url: str) -> dict[str, Any]:
    """A Segment `page` call as Cairn stores it: a `page_viewed` event with `properties.url`."""
    return {"at": at, "event": "page_viewed", "properties": {"url": url}}


async def test_a_pricing_visit_gets_the_pricing_follow_up_an_hour_later(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **URL_AUDIENCE)
    report = await simulator.run(journey(URL_VISITS), parse_scenario(scenario(
        visit("+0s", "https://www.example.com/"),
        visit("+2m", "https://www.example.com/pricing"),
        visit("+1d", "https://www.example.com/pricing"),  # already in the segment: no new entry
        until="+2d",
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert report.steps == ["after_the_visit", "which_segment", "pricing_follow_up"]
    assert sends(report) == [("pricing_follow_up", "email", "url-visit-pricing", "sent")]
    assert near(report.sends[0].at, START + timedelta(minutes=62))


async def test_words_and_regex_segments_each_get_their_own_follow_up(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **URL_AUDIENCE)
    report = await simulator.run(journey(URL_VISITS), parse_scenario(scenario(
        visit("+0s", "https://www.example.com/blog/enterprise-security-checklist"),
        visit("+30m", "https://www.example.com/docs/integrations/hubspot?ref=nav"),
        until="+1d",
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert sends(report) == [
        ("enterprise_follow_up", "email", "url-visit-enterprise", "sent"),
        ("integration_follow_up", "email", "url-visit-integration", "sent"),
    ]
    assert near(report.sends[0].at, START + timedelta(hours=1))
    assert near(report.sends[1].at, START + timedelta(minutes=90))
    assert report.steps == [
        "after_the_visit", "which_segment", "enterprise_or_integration", "enterprise_follow_up",
        "after_the_visit", "which_segment", "enterprise_or_integration", "integration_follow_up",
    ]


async def test_near_misses_enter_no_segment(simulator: Simulator, tmp_path: Path) -> None:
    folder = audience(tmp_path, **URL_AUDIENCE)
    report = await simulator.run(journey(URL_VISITS), parse_scenario(scenario(
        visit("+0s", "https://www.example.com/pricing?plan=growth"),   # not that exact URL
        visit("+1m", "https://www.example.com/enterprise"),            # one word of two
        visit("+2m", "https://www.example.com/docs/integrations/"),    # no integration named
        visit("+3m", "https://www.example.com/docs/integrations/hubspot/setup"),  # deeper page
        until="+1d",
    )), audience_folder=folder)
    assert report.outcome == "not_entered"
    assert report.sends == []


async def test_a_demo_request_before_the_follow_up_cancels_it(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **URL_AUDIENCE)
    report = await simulator.run(journey(URL_VISITS), parse_scenario(scenario(
        visit("+0s", "https://www.example.com/pricing"),
        {"at": "+20m", "event": "demo_requested"},
        until="+1d",
    )), audience_folder=folder)
    assert report.outcome == "demo_requested"
    assert report.steps == ["after_the_visit"]
    assert report.sends == []


async def test_a_late_evening_visit_is_followed_up_in_the_morning(
    simulator: Simulator, tmp_path: Path
) -> None:
    folder = audience(tmp_path, **URL_AUDIENCE)
    report = await simulator.run(journey(URL_VISITS), parse_scenario(scenario(
        visit("2026-03-02T19:30:00Z", "https://www.example.com/pricing"),  # 20:30 in Warsaw
        until="+2d",
    )), audience_folder=folder)
    assert report.outcome == "completed"
    assert [s.status for s in report.sends] == ["sent"]
    assert near(report.sends[0].at, datetime(2026, 3, 3, 7, 0, tzinfo=UTC))  # 08:00 Warsaw


# --------------------------------------------------------------------------- form-reply

FORM_REPLY = "form-reply"
QUOTE = {"at": "+0s", "event": "form_submitted",
         "properties": {"form": "quote", "subject": "50 seats", "message": "Price for 50 seats?"}}


async def test_an_answer_within_the_day_ends_it(simulator: Simulator) -> None:
    report = await simulator.run(journey(FORM_REPLY), parse_scenario(scenario(
        QUOTE, {"at": "+40m", "event": "form_replied"}, until="+2d",
        consent={},  # no marketing consent: the acknowledgement is transactional
    )))
    assert report.outcome == "ended:replied"
    assert report.steps == ["acknowledge", "reply_task", "wait_for_reply", "replied"]
    assert sends(report) == [("acknowledge", "email", "form-reply-ack", "sent")]
    assert near(report.sends[0].at, START)
    (task,) = report.tasks
    assert (task.queue, task.title) == ("sales", "Reply to Ana: quote form")
    assert near(task.at, START)
    assert near(task.due, START + timedelta(hours=1))
    assert report.alerts == []
    assert near(report.path[-1].at, START + timedelta(minutes=40))


async def test_no_answer_within_a_day_sends_a_follow_up_and_tells_sales(
    simulator: Simulator,
) -> None:
    report = await simulator.run(journey(FORM_REPLY), parse_scenario(scenario(
        QUOTE, {"at": "+1d1h", "event": "form_replied"}, until="+2d", consent={},
    )))
    assert report.outcome == "completed"
    assert report.steps == ["acknowledge", "reply_task", "wait_for_reply", "follow_up",
                            "escalate"]
    assert report.path[2].note == "no form_replied within 1d: timeout"
    assert sends(report) == [
        ("acknowledge", "email", "form-reply-ack", "sent"),
        ("follow_up", "email", "form-reply-follow-up", "sent"),
    ]
    assert near(report.sends[1].at, START + timedelta(days=1))
    assert [(a.step, a.to, a.template, a.status) for a in report.alerts] == [
        ("escalate", "slack:#sales", "form-reply-overdue", "recorded")]
    assert near(report.alerts[0].at, START + timedelta(days=1))
    assert len(report.tasks) == 1


async def test_other_forms_are_not_this_journeys_business(simulator: Simulator) -> None:
    report = await simulator.run(journey(FORM_REPLY), parse_scenario(scenario(
        {"at": "+0s", "event": "form_submitted", "properties": {"form": "newsletter"}},
        until="+1d",
    )))
    assert report.outcome == "not_entered"
    assert "trigger.where" in report.path[0].note
    assert report.sends == [] and report.tasks == []
