"""The WebEngage journeys of the catalog for an online-learning product, simulated: free trial
to paid, EMI reminders, weekly progress reports, course recommendations and churn prevention.

Each journey file runs on the real interpreter (Temporal's time-skipping server) with the
segments it reads loaded from `journeys/segments/`, as they apply live. The journeys that call
other systems (the learning platform, the recommendation service) call a real local service: a
Starlette app served over HTTP that checks Cairn's signature. Sends go through a provider that
records the rendered message before handing it to the outbox, so tests read what was written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.catalog_folder import load_segments
from cairn.channels.base import OutgoingMessage, Provider, Receipt
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.webhook import WebhookCaller, WebhookSettings, verify_signature
from cairn.conditions import ConditionScope, HasDone, window_start
from cairn.contact import ContactSnapshot
from cairn.journey import Journey
from cairn.journey_files import load_journey
from cairn.segments import decide
from cairn.store.db import Store
from starter.testing import SimulationReport, Simulator, parse_scenario
from tests.links_support import untracked
from tests.standins.server import StandInServer

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT / "journeys"
SECRET = "test-secret"
NOW = "2026-03-02T09:00:00Z"
BUCHAREST = "Europe/Bucharest"  # UTC+2, UTC+3 from 29 March 2026

# The external systems the journeys call, as written in the journey files.
LMS = "https://lms.example.com"
RECOMMENDER = "https://recommendations.example.com"


# --------------------------------------------------------------------------- helpers


def minute(moment: datetime) -> str:
    """UTC to the minute: journey time is exact, real processing adds only milliseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def path(report: SimulationReport) -> list[tuple[str, str]]:
    return [(p.step, minute(p.at)) for p in report.path]


def sends(report: SimulationReport) -> list[tuple[str | None, str | None, str | None, str, str]]:
    return [(s.step, s.channel, s.template, s.status, minute(s.at)) for s in report.sends]


def scores(report: SimulationReport) -> list[tuple[str, int, int, str]]:
    return [(s.dimension, s.add, s.total, minute(s.at)) for s in report.scores]


class RecordingProvider:
    """The outbox, keeping every rendered message it is handed (the report lists no content)."""

    def __init__(self, inner: Provider, sent: list[OutgoingMessage], store: Store) -> None:
        self.inner = inner
        self.sent = sent
        self.store = store
        self.name = inner.name
        self.channels = inner.channels
        self.idempotent = inner.idempotent

    async def send(self, message: OutgoingMessage) -> Receipt:
        self.sent.append(await untracked(self.store, message))  # links as written
        return await self.inner.send(message)

    async def aclose(self) -> None:
        await self.inner.aclose()


def recording_channels(sent: list[OutgoingMessage]) -> Callable[[Store], ChannelSet]:
    """Local providers that record what they send, and a webhook caller making real calls."""

    def build(store: Store) -> ChannelSet:
        providers: dict[str, Provider] = {
            channel: RecordingProvider(provider, sent, store)
            for channel, provider in local_channels(store).providers.items()
        }
        return ChannelSet(
            providers=providers,
            webhooks=WebhookCaller(WebhookSettings(signing_secret=SecretStr(SECRET))),
        )

    return build


def pointed_at(journey: Journey, base: str, real: str) -> Journey:
    """The journey with its webhook URLs moved from the real service to the local stand-in."""
    data = journey.model_dump(by_alias=True, exclude_none=True)
    for step in data["steps"].values():
        if "webhook" in step:
            step["webhook"]["url"] = step["webhook"]["url"].replace(real, base)
    return Journey.model_validate(data)


# --------------------------------------------------------------------------- the services


RECOMMENDED = [
    {"id": "py-201", "title": "Python for Data Analysis", "url": "https://learn.example.com/c/py-201"},
    {"id": "sql-101", "title": "SQL Fundamentals", "url": "https://learn.example.com/c/sql-101"},
    {"id": "ml-101", "title": "Machine Learning Basics", "url": "https://learn.example.com/c/ml-101"},
]


class Services:
    """The recommendation service and the learning platform: they check Cairn's signature, keep
    what they were asked, and answer like the real ones."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.progress_weeks = 0

    def reset(self) -> None:
        self.calls.clear()
        self.progress_weeks = 0

    async def _checked(self, request: Request) -> tuple[bytes, Response | None]:
        raw = await request.body()
        if not verify_signature(SECRET, request.headers.get("x-cairn-timestamp"), raw,
                                request.headers.get("x-cairn-signature")):
            return raw, JSONResponse({"error": "invalid signature"}, 401)
        self.calls.append({"method": request.method, "path": request.url.path,
                           "body": json.loads(raw) if raw else None})
        return raw, None

    async def recommendations(self, request: Request) -> Response:
        _, refused = await self._checked(request)
        if refused is not None:
            return refused
        body = self.calls[-1]["body"]
        return JSONResponse({"completed_course": body["completed_course"],
                             "courses": RECOMMENDED[: body["limit"]]})

    async def weekly_progress(self, request: Request) -> Response:
        _, refused = await self._checked(request)
        if refused is not None:
            return refused
        self.progress_weeks += 1
        week = self.progress_weeks
        return JSONResponse({
            "student": request.path_params["student"],
            "week": week,
            "report_id": f"rep-{week}",
            "report_url": f"https://learn.example.com/progress/rep-{week}",
            "hours_this_week": 1.5 + week,
            "needs_help": week == 2,
            "forum_url": "https://learn.example.com/forum/algebra-1",
            "courses": [{"title": "Algebra 1", "percent_complete": 20 * week,
                         "lessons_this_week": 3, "next_lesson": "Linear equations"}],
        })

    async def parent_message(self, request: Request) -> Response:
        _, refused = await self._checked(request)
        if refused is not None:
            return refused
        return JSONResponse({"queued": True})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/next-courses", self.recommendations, methods=["POST"]),
            Route("/api/students/{student}/weekly-progress", self.weekly_progress,
                  methods=["GET"]),
            Route("/api/parent-messages", self.parent_message, methods=["POST"]),
        ])


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[Services, StandInServer]]:
    state = Services()
    with StandInServer(state.app()) as server:
        yield state, server


@pytest.fixture
def service(services: tuple[Services, StandInServer]) -> Services:
    state, _ = services
    state.reset()
    return state


# --------------------------------------------------------------------------- fixtures


MY_SEGMENTS = ("trial_engaged", "active_learners", "about_to_churn")


@pytest.fixture(scope="module")
def audience(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This group's segments, copied from the catalog (the other files are not ours to load)."""
    folder = tmp_path_factory.mktemp("audience")
    (folder / "segments").mkdir()
    for key in MY_SEGMENTS:
        shutil.copy(JOURNEYS / "segments" / f"{key}.yaml", folder / "segments" / f"{key}.yaml")
    return folder


def journey(key: str) -> Journey:
    return load_journey(JOURNEYS / f"{key}.yaml")


# --------------------------------------------------------------------------- free trial to paid

TRIAL_CONTACT: dict[str, Any] = {
    "id": "trial-1", "timezone": BUCHAREST, "email": "ana@example.com",
    "web_push": [{"endpoint": "https://push.example/ana", "keys": {"p256dh": "k", "auth": "a"}}],
    "consent": {"marketing": True}, "attributes": {"first_name": "Ana"},
}
TRIAL_STARTED = {"at": "+0s", "event": "trial_started", "properties": {"plan": "premium"}}
THREE_LESSONS = [{"at": f"+{day}d", "event": "lesson_completed"} for day in (1, 2, 4)]


def trial(*events: dict[str, Any], until: str = "+12d", **contact: Any) -> Any:
    return parse_scenario({"now": NOW, "contact": {**TRIAL_CONTACT, **contact},
                           "events": [TRIAL_STARTED, *THREE_LESSONS, *events], "until": until})


async def test_trial_engaged_user_gets_a_web_push_and_subscribes_within_48h(
    simulator: Simulator, audience: Path
) -> None:
    paid = {"at": "+8d", "event": "subscription_purchased", "properties": {"plan": "yearly"}}
    rendered: list[OutgoingMessage] = []
    report = await simulator.run(journey("free-trial-to-paid"), trial(paid),
                                 audience_folder=audience, channels=recording_channels(rendered))
    assert report.outcome == "ended:converted", report.path
    assert path(report) == [
        ("wait_for_own_subscription", "2026-03-02T09:00"),
        ("engaged", "2026-03-09T09:00"),
        ("web_push_or_email", "2026-03-09T09:00"),
        ("premium_web_push", "2026-03-09T09:00"),
        ("wait_for_subscription", "2026-03-09T09:00"),
        ("engagement_bonus", "2026-03-10T09:00"),
        ("converted", "2026-03-10T09:00"),
    ]
    assert sends(report) == [
        ("premium_web_push", "web_push", "trial-go-premium", "sent", "2026-03-09T09:00"),
    ]
    assert scores(report) == [("global", 10, 10, "2026-03-10T09:00")]
    (push,) = rendered
    assert push.channel == "web_push"
    assert push.parts["title"] == "Ana, keep learning without interruption"


async def test_trial_without_web_push_gets_email_then_cart_email_and_checks_out(
    simulator: Simulator, audience: Path
) -> None:
    carted = {"at": "+3d", "event": "course_added_to_cart", "properties": {"course": "py-101"}}
    checkout = {"at": "+9d12h", "event": "checkout_completed", "properties": {"total": 49}}
    report = await simulator.run(journey("free-trial-to-paid"),
                                 trial(carted, checkout, web_push=[]), audience_folder=audience)
    assert report.outcome == "ended:converted", report.path
    assert report.steps == [
        "wait_for_own_subscription", "engaged", "web_push_or_email", "premium_email",
        "wait_for_subscription", "courses_in_cart", "cart_email", "wait_for_checkout",
        "lead_bonus", "converted_after_cart",
    ]
    assert sends(report) == [
        ("premium_email", "email", "trial-go-premium", "sent", "2026-03-09T09:00"),
        ("cart_email", "email", "trial-courses-in-cart", "sent", "2026-03-11T09:00"),
    ]
    assert scores(report) == [("global", 10, 10, "2026-03-11T21:00")]


async def test_trial_without_cart_ends_unconverted_after_48h(
    simulator: Simulator, audience: Path
) -> None:
    report = await simulator.run(journey("free-trial-to-paid"), trial(web_push=[]),
                                 audience_folder=audience)
    assert report.outcome == "ended:not_converted", report.path
    assert report.steps[-2:] == ["courses_in_cart", "not_converted"]
    assert minute(report.path[-1].at) == "2026-03-11T09:00"
    assert [s.step for s in report.sends] == ["premium_email"]
    assert report.scores == []


@pytest.mark.parametrize(
    ("events", "outcome", "steps"),
    [
        # One lesson in the trial: not in trial_engaged, nothing is sent.
        ([{"at": "+1d", "event": "lesson_completed"}], "ended:not_engaged",
         ["wait_for_own_subscription", "engaged", "not_engaged"]),
        # Subscribed on day 5 on their own: no nudge, no bonus.
        ([*THREE_LESSONS, {"at": "+5d", "event": "subscription_purchased"}],
         "ended:subscribed_on_their_own",
         ["wait_for_own_subscription", "subscribed_on_their_own"]),
    ],
)
async def test_trial_users_who_need_no_nudge_get_none(
    simulator: Simulator, audience: Path, events: list[dict[str, Any]], outcome: str,
    steps: list[str],
) -> None:
    scenario = parse_scenario({"now": NOW, "contact": TRIAL_CONTACT,
                               "events": [TRIAL_STARTED, *events], "until": "+10d"})
    report = await simulator.run(journey("free-trial-to-paid"), scenario,
                                 audience_folder=audience)
    assert report.outcome == outcome, report.path
    assert report.steps == steps
    assert report.sends == [] and report.scores == []


# --------------------------------------------------------------------------- EMI reminders

BORROWER: dict[str, Any] = {
    "id": "loan-1", "timezone": BUCHAREST, "email": "ravi@example.com", "phone": "+40722000001",
    "attributes": {"first_name": "Ravi", "loan_product": "Home loan", "loan_id": "HL-1042",
                   "emi_amount": 18500, "currency": "INR"},
}


def due(at: str, date: str) -> dict[str, Any]:
    """The loan system sets (or moves) the due date."""
    return {"at": at, "type": "identify", "traits": {"emi_due_date": date}}


def paid(at: str, date: str, next_date: str) -> list[dict[str, Any]]:
    """A payment, and the loan system moving the due date one month on."""
    return [{"at": at, "event": "emi_paid", "properties": {"due_date": date, "amount": 18500}},
            due(at, next_date)]


def emi(*events: dict[str, Any], until: str) -> Any:
    return parse_scenario({"now": "2026-03-01T08:00:00Z", "contact": BORROWER,
                           "events": list(events), "until": until})


async def test_emi_reminders_d10_and_d5_for_two_monthly_cycles(simulator: Simulator) -> None:
    scenario = emi(
        due("+0s", "2026-03-20"),
        *paid("2026-03-17T06:30:00Z", "2026-03-20", "2026-04-20"),
        *paid("2026-04-17T06:30:00Z", "2026-04-20", "2026-05-20"),
        until="2026-04-25T00:00:00Z",
    )
    rendered: list[OutgoingMessage] = []
    report = await simulator.run(journey("emi-reminders"), scenario,
                                 channels=recording_channels(rendered))
    assert report.outcome == "waiting", report.path
    cycle_1 = [  # 10:00 in Bucharest is 08:00 UTC in March...
        ("paid_by_d10", "2026-03-10T08:00"), ("remind_d10", "2026-03-10T08:00"),
        ("wait_d5", "2026-03-10T08:00"), ("paid_by_d5", "2026-03-15T08:00"),
        ("remind_d5_email", "2026-03-15T08:00"), ("remind_d5_sms", "2026-03-15T08:00"),
        ("wait_after_due", "2026-03-15T08:00"), ("paid_by_due", "2026-03-21T08:00"),
    ]
    cycle_2 = [  # ...and 07:00 UTC after the switch to summer time on 29 March.
        ("paid_by_d10", "2026-04-10T07:00"), ("remind_d10", "2026-04-10T07:00"),
        ("wait_d5", "2026-04-10T07:00"), ("paid_by_d5", "2026-04-15T07:00"),
        ("remind_d5_email", "2026-04-15T07:00"), ("remind_d5_sms", "2026-04-15T07:00"),
        ("wait_after_due", "2026-04-15T07:00"), ("paid_by_due", "2026-04-21T07:00"),
    ]
    assert path(report) == [("wait_d10", "2026-03-01T08:00"), *cycle_1,
                            ("wait_d10", "2026-03-21T08:00"), *cycle_2,
                            ("wait_d10", "2026-04-21T07:00")]
    assert "until 2026-05-10T07:00:00+00:00" in report.path[-1].note  # the third month's D-10
    assert sends(report) == [
        ("remind_d10", "email", "emi-reminder", "sent", "2026-03-10T08:00"),
        ("remind_d5_email", "email", "emi-reminder-final", "sent", "2026-03-15T08:00"),
        ("remind_d5_sms", "sms", "emi-reminder-final", "sent", "2026-03-15T08:00"),
        ("remind_d10", "email", "emi-reminder", "sent", "2026-04-10T07:00"),
        ("remind_d5_email", "email", "emi-reminder-final", "sent", "2026-04-15T07:00"),
        ("remind_d5_sms", "sms", "emi-reminder-final", "sent", "2026-04-15T07:00"),
    ]
    subjects = [m.parts.get("subject") for m in rendered]
    assert subjects == [
        "Your EMI of 18500 INR is due on 2026-03-20",
        "5 days left: your EMI is due on 2026-03-20",
        None,
        "Your EMI of 18500 INR is due on 2026-04-20",  # the moved due date
        "5 days left: your EMI is due on 2026-04-20",
        None,
    ]
    assert rendered[2].to == "+40722000001"
    assert "is due on 2026-03-20" in rendered[2].parts["body"]


async def test_emi_paid_early_skips_the_reminders_of_that_cycle(simulator: Simulator) -> None:
    scenario = emi(
        due("+0s", "2026-03-20"),
        *paid("2026-03-12T10:00:00Z", "2026-03-20", "2026-04-20"),  # after D-10, before D-5
        *paid("2026-04-05T10:00:00Z", "2026-04-20", "2026-05-20"),  # before D-10
        until="2026-05-12T00:00:00Z",
    )
    report = await simulator.run(journey("emi-reminders"), scenario)
    assert report.outcome == "waiting", report.path
    assert path(report) == [
        ("wait_d10", "2026-03-01T08:00"),
        ("paid_by_d10", "2026-03-10T08:00"), ("remind_d10", "2026-03-10T08:00"),
        ("wait_d5", "2026-03-10T08:00"), ("paid_by_d5", "2026-03-15T08:00"),
        ("wait_d10", "2026-03-15T08:00"), ("paid_by_d10", "2026-04-10T07:00"),
        ("wait_d10", "2026-04-10T07:00"), ("paid_by_d10", "2026-05-10T07:00"),
        ("remind_d10", "2026-05-10T07:00"), ("wait_d5", "2026-05-10T07:00"),
    ]
    assert sends(report) == [
        ("remind_d10", "email", "emi-reminder", "sent", "2026-03-10T08:00"),
        ("remind_d10", "email", "emi-reminder", "sent", "2026-05-10T07:00"),
    ]


async def test_emi_unpaid_after_the_due_date_ends_overdue(simulator: Simulator) -> None:
    report = await simulator.run(journey("emi-reminders"),
                                 emi(due("+0s", "2026-03-20"), until="2026-03-25T00:00:00Z"))
    assert report.outcome == "ended:overdue", report.path
    assert path(report)[-2:] == [("paid_by_due", "2026-03-21T08:00"),
                                 ("overdue", "2026-03-21T08:00")]
    assert [(s.step, s.channel) for s in report.sends] == [
        ("remind_d10", "email"), ("remind_d5_email", "email"), ("remind_d5_sms", "sms")]


# --------------------------------------------------------------------------- weekly progress

STUDENT: dict[str, Any] = {
    "id": "student-1", "timezone": BUCHAREST, "email": "mia@example.com",
    "phone": "+40722000002",
    "attributes": {"first_name": "Mia", "parent_phone": "+40722000003",
                   "parent_email": "parent@example.com"},
}


def study(at: str, minutes: int) -> dict[str, Any]:
    return {"at": at, "event": "study_session", "properties": {"minutes": minutes}}


async def test_weekly_report_for_active_student_and_parent_until_inactive(
    simulator: Simulator, audience: Path, services: tuple[Services, StandInServer],
    service: Services,
) -> None:
    _, server = services
    scenario = parse_scenario({
        "now": NOW, "contact": STUDENT, "until": "+25d",
        "events": [
            {"at": "+0s", "event": "course_started", "properties": {"course_id": "alg-1"}},
            study("+1d", 40), study("+3d", 30),     # week 1: 70 minutes
            study("+8d", 45), study("+10d", 30),    # week 2: 75 minutes
            {"at": "+17d3h", "event": "app_opened"},  # week 3: opened the app, no study
        ],
    })
    rendered: list[OutgoingMessage] = []
    report = await simulator.run(pointed_at(journey("weekly-progress-report"), server.url, LMS),
                                 scenario, audience_folder=audience,
                                 channels=recording_channels(rendered))
    assert report.outcome == "ended:inactive", report.path
    week = ["wait_a_week", "evening", "active", "fetch_progress", "text_student", "text_parent",
            "email_student"]
    assert report.steps == [*week, *week, "wait_a_week", "evening", "active", "inactive"]
    # 17:00 in Bucharest (15:00 UTC): a week after the start, then every 7 days.
    assert sends(report) == [
        ("text_student", "sms", "weekly-progress-text", "sent", "2026-03-09T15:00"),
        ("email_student", "email", "weekly-progress-email", "sent", "2026-03-09T15:00"),
        ("text_student", "sms", "weekly-progress-text", "sent", "2026-03-16T15:00"),
        ("email_student", "email", "weekly-progress-email", "sent", "2026-03-16T15:00"),
    ]
    assert minute(report.path[-1].at) == "2026-03-23T15:00"
    assert [(w.step, w.method, w.status, minute(w.at)) for w in report.webhooks] == [
        ("fetch_progress", "GET", "sent", "2026-03-09T15:00"),
        ("text_parent", "POST", "sent", "2026-03-09T15:00"),
        ("fetch_progress", "GET", "sent", "2026-03-16T15:00"),
        ("text_parent", "POST", "sent", "2026-03-16T15:00"),
    ]
    assert report.webhooks[0].url == f"{server.url}/api/students/student-1/weekly-progress"
    # The platform's answer fills the student's messages...
    texts = [(m.channel, m.to, m.parts["body"]) for m in rendered]
    assert texts[0] == ("sms", "+40722000002",
                        "Mia, your week: 2.5 h of study, Algebra 1 20%. "
                        "Report: https://learn.example.com/progress/rep-1")
    assert texts[1][:2] == ("email", "mia@example.com")
    assert "Algebra 1: 20% complete (3 lessons this week)" in texts[1][2]
    assert "Questions or ideas to share?" in texts[1][2]
    assert "Stuck on something?" in texts[3][2]  # week 2's report says they need help
    assert rendered[3].parts["subject"] == "Your week in review: week 2"
    # ...and the parent's copy is asked of the platform with the parent's number and report.
    parents = [c["body"] for c in service.calls if c["path"] == "/api/parent-messages"]
    assert parents == [
        {"student": "student-1", "parent_phone": "+40722000003",
         "parent_email": "parent@example.com", "message": "weekly-progress",
         "report_id": f"rep-{n}"}
        for n in (1, 2)
    ]


async def test_weekly_report_not_sent_to_a_student_who_barely_studied(
    simulator: Simulator, audience: Path, services: tuple[Services, StandInServer],
    service: Services,
) -> None:
    _, server = services
    scenario = parse_scenario({
        "now": NOW, "contact": STUDENT, "until": "+10d",
        "events": [{"at": "+0s", "event": "course_started"}, study("+2d", 20)],
    })
    report = await simulator.run(pointed_at(journey("weekly-progress-report"), server.url, LMS),
                                 scenario, audience_folder=audience,
                                 channels=recording_channels([]))
    assert report.outcome == "ended:inactive", report.path
    assert path(report) == [("wait_a_week", "2026-03-02T09:00"), ("evening", "2026-03-09T09:00"),
                            ("active", "2026-03-09T15:00"), ("inactive", "2026-03-09T15:00")]
    assert report.sends == [] and report.webhooks == []
    assert service.calls == []


# --------------------------------------------------------------------------- recommendations

GRADUATE: dict[str, Any] = {
    "id": "grad-1", "timezone": BUCHAREST, "email": "leo@example.com",
    "web_push": [{"endpoint": "https://push.example/leo", "keys": {"p256dh": "k", "auth": "a"}}],
    "consent": {"marketing": True}, "attributes": {"first_name": "Leo"},
}
COMPLETED = {"at": "+0s", "event": "course_completed",
             "properties": {"course_id": "py-101", "course_name": "Python for Beginners",
                            "certificate_url": "https://learn.example.com/cert/py-101-leo"}}
TITLES = [course["title"] for course in RECOMMENDED]


async def test_recommendations_from_the_service_then_web_push_and_conversion(
    simulator: Simulator, services: tuple[Services, StandInServer], service: Services,
) -> None:
    _, server = services
    scenario = parse_scenario({
        "now": NOW, "contact": GRADUATE, "until": "+10d",
        "events": [COMPLETED, {"at": "+8d", "event": "course_started",
                               "properties": {"course_id": "py-201"}}],
    })
    rendered: list[OutgoingMessage] = []
    report = await simulator.run(
        pointed_at(journey("course-recommendations"), server.url, RECOMMENDER), scenario,
        channels=recording_channels(rendered))
    assert report.outcome == "ended:converted", report.path
    assert path(report) == [
        ("fetch_recommendations", "2026-03-02T09:00"), ("congratulate", "2026-03-02T09:00"),
        ("wait_2d", "2026-03-02T09:00"), ("feedback_email", "2026-03-04T09:00"),
        ("browsed_recommendations", "2026-03-04T09:00"),
        ("web_push_or_email", "2026-03-09T09:00"), ("recommend_web_push", "2026-03-09T09:00"),
        ("wait_for_conversion", "2026-03-09T09:00"), ("converted", "2026-03-11T09:00"),
        ("enrolled", "2026-03-11T09:00"),
    ]
    assert sends(report) == [
        ("congratulate", "email", "course-congratulations", "sent", "2026-03-02T09:00"),
        ("feedback_email", "email", "course-feedback", "sent", "2026-03-04T09:00"),
        ("recommend_web_push", "web_push", "course-recommendations-again", "sent",
         "2026-03-09T09:00"),
    ]
    assert [(w.step, w.method, w.url, w.status) for w in report.webhooks] == [
        ("fetch_recommendations", "POST", f"{server.url}/v1/next-courses", "sent"),
    ]
    # The service was asked (signed) about the completed course...
    assert service.calls == [{"method": "POST", "path": "/v1/next-courses",
                              "body": {"contact": "grad-1", "completed_course": "py-101",
                                       "limit": 3}}]
    # ...and its answer is what every message recommends.
    congrats, feedback, push = rendered
    assert congrats.parts["subject"] == "Congratulations, Leo! You completed Python for Beginners"
    assert "https://learn.example.com/cert/py-101-leo" in congrats.parts["body"]
    for message in (congrats, feedback):
        for course in RECOMMENDED:
            assert f"- {course['title']}: {course['url']}?source=recommendations" in \
                message.parts["body"]
    assert push.parts["title"] == "Python for Data Analysis is waiting"
    assert push.parts["body"] == ("Picked for you after Python for Beginners: "
                                  + ", ".join(TITLES) + ".")
    assert push.parts["url"] == "https://learn.example.com/c/py-201?source=recommendations"


async def test_recommendations_browsed_within_5_days_end_the_journey(
    simulator: Simulator, services: tuple[Services, StandInServer], service: Services,
) -> None:
    _, server = services
    scenario = parse_scenario({
        "now": NOW, "contact": GRADUATE, "until": "+10d",
        "events": [COMPLETED,
                   # browsing from elsewhere does not count; from the recommendations it does
                   {"at": "+3d", "event": "course_viewed", "properties": {"course_id": "x"}},
                   {"at": "+4d2h", "event": "course_viewed",
                    "properties": {"course_id": "sql-101", "source": "recommendations"}}],
    })
    report = await simulator.run(
        pointed_at(journey("course-recommendations"), server.url, RECOMMENDER), scenario,
        channels=recording_channels([]))
    assert report.outcome == "ended:browsed", report.path
    assert report.steps == ["fetch_recommendations", "congratulate", "wait_2d",
                            "feedback_email", "browsed_recommendations", "browsed"]
    assert minute(report.path[-1].at) == "2026-03-06T11:00"
    assert [(s.step, minute(s.at)) for s in report.sends] == [
        ("congratulate", "2026-03-02T09:00"), ("feedback_email", "2026-03-04T09:00")]
    assert len(service.calls) == 1


async def test_recommendations_again_by_email_without_web_push_no_conversion(
    simulator: Simulator, services: tuple[Services, StandInServer], service: Services,
) -> None:
    _, server = services
    scenario = parse_scenario({"now": NOW, "contact": {**GRADUATE, "web_push": []},
                               "events": [COMPLETED], "until": "+10d"})
    rendered: list[OutgoingMessage] = []
    report = await simulator.run(
        pointed_at(journey("course-recommendations"), server.url, RECOMMENDER), scenario,
        channels=recording_channels(rendered))
    assert report.outcome == "completed", report.path
    assert report.steps[-4:] == ["web_push_or_email", "recommend_email", "wait_for_conversion",
                                 "converted"]
    assert sends(report)[-1] == ("recommend_email", "email", "course-recommendations-again",
                                 "sent", "2026-03-09T09:00")
    assert all(title in rendered[-1].parts["body"] for title in TITLES)


# --------------------------------------------------------------------------- churn prevention

USER: dict[str, Any] = {
    "id": "user-1", "timezone": BUCHAREST, "email": "ion@example.com",
    "push_tokens": ["tok-ion"], "phone": "+40722000004", "consent": {"marketing": True},
    "attributes": {"first_name": "Ion"},
}
# Active for a while (3 logins in 5 days), then quiet. On the 7th quiet day the hourly segment
# sweep finds the user about to churn and stores `segment_entered`; the scenario plays it.
ACTIVE_THEN_QUIET = [{"at": f"+{day}d", "event": "login"} for day in (0, 2, 4)]
SWEEP_FINDS_THEM = {"at": "+11d1h", "event": "segment_entered",
                    "properties": {"segment": "about_to_churn"}}


async def test_churn_user_reachable_by_email_returns_and_is_welcomed_back(
    simulator: Simulator, audience: Path
) -> None:
    scenario = parse_scenario({
        "now": NOW, "contact": USER, "until": "+14d",
        "events": [*ACTIVE_THEN_QUIET, SWEEP_FINDS_THEM, {"at": "+11d6h", "event": "login"}],
    })
    report = await simulator.run(journey("churn-prevention"), scenario, audience_folder=audience)
    assert report.outcome == "ended:returned", report.path
    assert path(report) == [
        ("platform_news", "2026-03-13T10:00"), ("wait_for_login", "2026-03-13T10:00"),
        ("welcome_back", "2026-03-13T15:00"), ("returned", "2026-03-13T15:00"),
    ]
    assert sends(report) == [
        ("platform_news", "email", "churn-platform-news", "sent", "2026-03-13T10:00"),
        ("welcome_back", "email", "churn-welcome-back", "sent", "2026-03-13T15:00"),
    ]


async def test_churn_user_without_email_gets_push_and_a_feedback_request(
    simulator: Simulator, audience: Path
) -> None:
    scenario = parse_scenario({
        "now": NOW, "contact": {**USER, "email": None}, "until": "+14d",
        "events": [*ACTIVE_THEN_QUIET, SWEEP_FINDS_THEM],
    })
    rendered: list[OutgoingMessage] = []
    report = await simulator.run(journey("churn-prevention"), scenario, audience_folder=audience,
                                 channels=recording_channels(rendered))
    assert report.outcome == "completed", report.path
    assert path(report) == [
        ("platform_news", "2026-03-13T10:00"), ("wait_for_login", "2026-03-13T10:00"),
        ("ask_feedback", "2026-03-14T10:00"),
    ]
    assert sends(report) == [
        ("platform_news", "push", "churn-platform-news", "sent", "2026-03-13T10:00"),
        ("ask_feedback", "push", "churn-feedback", "sent", "2026-03-14T10:00"),
    ]
    assert [m.to for m in rendered] == ["tok-ion", "tok-ion"]
    assert rendered[1].parts["title"] == "What should we teach next?"


@pytest.mark.parametrize(
    ("login_days", "day", "member"),
    [
        ((0, 2, 4), 11.05, True),    # 3 logins, the last one 7 days ago: about to churn
        ((0, 2, 4), 10.9, False),    # the last login less than 7 days ago
        ((0, 2), 11.05, False),      # only 2 logins: never was active enough
        ((0, 2, 4), 15.5, False),    # the first login is more than 15 days back: churned
        (tuple(range(10)), 16.5, True),  # daily for 10 days, then a quiet week
    ],
)
async def test_about_to_churn_segment_rule(audience: Path, login_days: tuple[int, ...],
                                           day: float, member: bool) -> None:
    """The segment as the sweep decides it, over a login history (the sweep is not simulated)."""
    (segment,) = [s for s in load_segments(audience) if s.key == "about_to_churn"]
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    logins = [start + timedelta(days=d) for d in login_days]
    now = start + timedelta(days=day)

    async def count(spec: HasDone) -> int:
        since = window_start(spec, now, None)
        return sum(1 for at in logins if (since is None or at >= since) and at <= now)

    scope = ConditionScope(now=now, count_events=count)
    (decided,) = await decide([segment], ContactSnapshot(id="user-1"), scope)
    assert decided.member is member, decided.reason
