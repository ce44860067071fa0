"""The six journeys of the organisational-processes article, simulated end to end.

Source: "6 organizational processes that can be transferred to the automatic route":
sleepy-customer retention, collections, service arrival confirmation, course material by SMS,
satisfaction surveys and appointment confirmation. Each journey runs on the module's
time-skipping server with the real interpreter, activities, ingest and router; the providers are
the outbox, wrapped so that the tests can also read what each message, alert and task said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cairn.channels.base import Alert, OutgoingMessage, OutgoingTask, Receipt
from cairn.channels.local import OutboxProvider
from cairn.channels.registry import ChannelSet
from cairn.journey import CHANNELS, Journey
from cairn.journey_files import load_journey
from cairn.store.db import Store
from cairn.templates import message_scope, render
from starter.testing import SimulationReport, Simulator, parse_scenario
from tests.links_support import untracked

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT / "journeys"
NOW = "2026-03-02T09:00:00Z"  # a Monday; 11:00 in Bucharest (UTC+2 until 29 March)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

ANA: dict[str, Any] = {
    "id": "c-ana",
    "timezone": "Europe/Bucharest",
    "email": "ana@example.com",
    "phone": "+40722000111",
    "consent": {"marketing": True},
    "attributes": {"first_name": "Ana"},
}


# --------------------------------------------------------------------------- recording outbox


@dataclass
class Recorded:
    """What left Cairn in a simulation: messages (rendered parts), alerts and CRM tasks."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    tasks: list[OutgoingTask] = field(default_factory=list)

    def bodies(self, channel: str) -> list[str]:
        return [m.parts["body"] for m in self.messages if m.channel == channel]

    def of(self, template: str) -> OutgoingMessage:
        (message,) = [m for m in self.messages if m.metadata.get("template") == template]
        return message


class RecordingOutbox(OutboxProvider):
    """The outbox (nothing leaves the machine), keeping each rendered message for the test,
    its tracked links put back to their targets."""

    records_only = False  # called once the claim and its links are committed

    def __init__(self, recorded: Recorded, store: Store) -> None:
        super().__init__(CHANNELS)
        self.recorded = recorded
        self.store = store

    async def send(self, message: OutgoingMessage) -> Receipt:
        if all(m.idempotency_key != message.idempotency_key for m in self.recorded.messages):
            self.recorded.messages.append(await untracked(self.store, message))
        return await super().send(message)


class RecordingTeam:
    """Stands for Slack (alerts) and the CRM (tasks): keeps what they would have received."""

    name = "recorder"

    def __init__(self, recorded: Recorded) -> None:
        self.recorded = recorded

    async def notify(self, alert: Alert) -> Receipt:
        self.recorded.alerts.append(alert)
        return Receipt(provider=self.name, provider_message_id=alert.idempotency_key)

    async def create_task(self, task: OutgoingTask) -> Receipt:
        self.recorded.tasks.append(task)
        return Receipt(provider=self.name, provider_message_id=task.idempotency_key)

    async def aclose(self) -> None:
        return None


async def play(simulator: Simulator, journey: Journey, scenario: dict[str, Any]
               ) -> tuple[SimulationReport, Recorded]:
    recorded = Recorded()

    def channels(store: Store) -> ChannelSet:
        outbox = RecordingOutbox(recorded, store)
        team = RecordingTeam(recorded)
        return ChannelSet(providers=dict.fromkeys(CHANNELS, outbox), notifier=team, tasks=team)

    report = await simulator.run(journey, parse_scenario(scenario), channels=channels)
    return report, recorded


def scenario(*events: dict[str, Any], until: str, now: str = NOW,
             contact: dict[str, Any] | None = None, **attributes: Any) -> dict[str, Any]:
    person = {**ANA, **(contact or {})}
    person["attributes"] = {**person["attributes"], **attributes}
    return {"now": now, "contact": person, "events": list(events), "until": until}


def sends(report: SimulationReport, start: datetime = START
          ) -> list[tuple[str | None, str | None, str | None, str, timedelta]]:
    """(step, channel, template, status, time after start rounded down to the minute)."""
    return [(s.step, s.channel, s.template, s.status, minutes(s.at - start))
            for s in report.sends]


def minutes(delta: timedelta) -> timedelta:
    """Real processing time runs on the simulated clock too: compare to the whole minute."""
    return timedelta(minutes=int(delta.total_seconds() // 60))


def after(days: int = 0, hours: int = 0, mins: int = 0) -> timedelta:
    return timedelta(days=days, hours=hours, minutes=mins)


def load(key: str) -> Journey:
    return load_journey(JOURNEYS / f"{key}.yaml")


# --------------------------------------------------------------------------- 2. collections

INVOICE = {"at": "+0s", "event": "invoice_overdue",
           "properties": {"invoice_id": "INV-1042", "amount": 29, "currency": "EUR",
                          "pay_url": "https://billing.example.com/pay/INV-1042"}}


def feedback(at: str, event: str, template: str, step: str, journey: str,
             **properties: Any) -> dict[str, Any]:
    """A delivery report as Cairn stores it: the event names its journey, step and template."""
    return {"at": at, "event": event,
            "properties": {"journey": journey, "step": step, "template": template, **properties}}


@pytest.fixture(scope="module")
def collections() -> Journey:
    return load("collections")


async def test_collections_unopened_email_then_sms_then_a_call_task(
    simulator: Simulator, collections: Journey
) -> None:
    delivered = feedback("+2d1m", "sms_delivered", "collections-sms-reminder", "sms_reminder",
                         "collections")
    report, recorded = await play(simulator, collections,
                                  scenario(INVOICE, delivered, until="+20d"))
    assert report.outcome == "ended:unpaid"
    assert report.steps == ["email_reminder", "email_opened", "daytime_for_sms", "sms_reminder",
                            "sms_delivered", "grace_after_sms", "visited_payment_page",
                            "call_after_sms", "wait_after_call", "still_unpaid"]
    assert sends(report) == [
        ("email_reminder", "email", "collections-payment-reminder", "sent", after()),
        ("sms_reminder", "sms", "collections-sms-reminder", "sent", after(days=2)),
    ]
    (task,) = report.tasks
    assert (task.queue, task.title) == (
        "collections", "Call Ana: invoice INV-1042 unpaid after email and SMS")
    assert minutes(task.at - START) == after(days=5, mins=1)  # 3 days after the delivery
    assert task.due is not None and task.due - task.at == timedelta(days=1)
    assert recorded.tasks[0].note is not None and "+40722000111" in recorded.tasks[0].note
    sms = recorded.of("collections-sms-reminder")
    assert "INV-1042" in sms.parts["body"]
    assert "https://billing.example.com/pay/INV-1042" in sms.parts["body"]
    email = recorded.of("collections-payment-reminder")
    assert email.parts["subject"] == "Payment reminder: invoice INV-1042"
    assert "29 EUR" in email.parts["body"]


async def test_collections_opened_email_and_payment_end_the_journey(
    simulator: Simulator, collections: Journey
) -> None:
    opened = feedback("+3h", "email_opened", "collections-payment-reminder", "email_reminder",
                      "collections")
    paid = {"at": "+4d", "event": "invoice_paid", "properties": {"invoice_id": "INV-1042"}}
    report, _ = await play(simulator, collections, scenario(INVOICE, opened, paid, until="+20d"))
    assert report.outcome == "paid"
    assert report.steps == ["email_reminder", "email_opened", "grace_after_open"]
    assert report.path[1].note.startswith("got email_opened")
    assert minutes(report.path[2].at - START) == after(hours=3)
    assert sends(report) == [
        ("email_reminder", "email", "collections-payment-reminder", "sent", after()),
    ]
    assert report.tasks == []


async def test_collections_payment_page_visited_but_unpaid_says_so_in_the_task(
    simulator: Simulator, collections: Journey
) -> None:
    opened = feedback("+1h", "email_opened", "collections-payment-reminder", "email_reminder",
                      "collections")
    # Opened, then 5 days of grace: the SMS goes on Saturday 10:00 UTC (12:00 in Bucharest).
    delivered = feedback("+5d1h2m", "sms_delivered", "collections-sms-reminder", "sms_reminder",
                         "collections")
    visit = {"at": "+5d2h", "event": "page_viewed",
             "properties": {"url": "https://billing.example.com/pay/INV-1042"}}
    paid = {"at": "+10d", "event": "invoice_paid", "properties": {"invoice_id": "INV-1042"}}
    report, _ = await play(simulator, collections,
                           scenario(INVOICE, opened, delivered, visit, paid, until="+20d"))
    assert report.outcome == "paid"  # paid after the call task: the wait ends at once
    assert report.steps == ["email_reminder", "email_opened", "grace_after_open",
                            "daytime_for_sms", "sms_reminder", "sms_delivered",
                            "grace_after_sms", "visited_payment_page", "call_after_visit",
                            "wait_after_call"]
    assert sends(report) == [
        ("email_reminder", "email", "collections-payment-reminder", "sent", after()),
        ("sms_reminder", "sms", "collections-sms-reminder", "sent", after(days=5, hours=1)),
    ]
    assert [(t.queue, t.title, minutes(t.at - START)) for t in report.tasks] == [
        ("collections", "Call Ana: opened the payment page for invoice INV-1042 but did not pay",
         after(days=8, hours=1, mins=2)),
    ]


async def test_collections_sms_waits_for_daytime_and_undelivered_means_a_call(
    simulator: Simulator, collections: Journey
) -> None:
    evening = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # 21:00 in Bucharest
    report, _ = await play(simulator, collections,
                           scenario(INVOICE, now="2026-03-02T19:00:00Z", until="+20d"))
    assert report.outcome == "ended:unpaid"
    assert report.steps == ["email_reminder", "email_opened", "daytime_for_sms", "sms_reminder",
                            "sms_delivered", "call_unreached", "wait_after_call", "still_unpaid"]
    # The email times out on Wednesday 21:00 local: the SMS waits for Thursday 09:00 local.
    assert sends(report, evening) == [
        ("email_reminder", "email", "collections-payment-reminder", "sent", after()),
        ("sms_reminder", "sms", "collections-sms-reminder", "sent", after(days=2, hours=12)),
    ]
    assert [(t.title, minutes(t.at - evening)) for t in report.tasks] == [
        ("Call Ana: invoice INV-1042 unpaid, payment SMS not delivered", after(days=3, hours=12)),
    ]


# --------------------------------------------------------------------------- template checks


def render_part(journey: Journey, template: str, channel: str, *, contact: dict[str, Any],
                event: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                ) -> dict[str, str]:
    scope = message_scope(contact, event, context)
    scope["unsubscribe_url"] = "https://cairn.example.com/u/signed"
    return render(template, journey.templates[template], channel, scope)


# --------------------------------------------------------------------------- 1. sleepy customers

ASLEEP = {"at": "+0s", "event": "segment_entered", "properties": {"segment": "sleepy_customers"}}


def form(at: str, answer: Any, **extra: Any) -> dict[str, Any]:
    return {"at": at, "event": "form_submitted",
            "properties": {"form": "sleepy-feedback", "answer": answer, **extra}}


@pytest.fixture(scope="module")
def sleepy() -> Journey:
    return load("sleepy-customer-retention")


async def test_sleepy_customer_answers_and_gets_a_reply_to_each_reason(
    simulator: Simulator, sleepy: Journey
) -> None:
    answered = form("+1d", ["too_expensive", "bad_experience"])
    report, recorded = await play(simulator, sleepy, scenario(ASLEEP, answered, until="+10d"))
    assert report.outcome == "completed"
    assert report.steps == ["feedback_email", "wait_for_answer", "bad_experience", "care_call",
                            "too_many_emails", "answer_letter", "mark_answered"]
    assert sends(report) == [
        ("feedback_email", "email", "sleepy-feedback-form", "sent", after()),
        ("answer_letter", "email", "sleepy-feedback-answer", "sent", after(days=1)),
    ]
    assert [(t.queue, t.title, minutes(t.at - START)) for t in report.tasks] == [
        ("customer-care", "Call Ana: left us after a bad experience", after(days=1)),
    ]
    letter = recorded.of("sleepy-feedback-answer").parts["body"]
    assert "COMEBACK15" in letter                       # too_expensive: the discount code
    assert "customer care team will call you" in letter  # bad_experience
    assert "digest" not in letter and "second chance" not in letter  # reasons not marked
    assert "Unsubscribe: http" in recorded.of("sleepy-feedback-form").parts["body"]


async def test_sleepy_customer_without_answer_gets_a_coupon_and_comes_back(
    simulator: Simulator, sleepy: Journey
) -> None:
    bought = {"at": "+9d", "event": "purchase", "properties": {"total": 42}}
    report, recorded = await play(simulator, sleepy, scenario(ASLEEP, bought, until="+30d"))
    assert report.outcome == "reactivated"
    assert report.steps == ["feedback_email", "wait_for_answer", "coupon_email",
                            "wait_for_purchase"]
    assert sends(report) == [
        ("feedback_email", "email", "sleepy-feedback-form", "sent", after()),
        ("coupon_email", "email", "sleepy-comeback-coupon", "sent", after(days=7)),
    ]
    assert report.tasks == []
    assert "COMEBACK15" in recorded.of("sleepy-comeback-coupon").parts["body"]


async def test_sleepy_customer_late_night_answer_waits_for_the_morning(
    simulator: Simulator, sleepy: Journey
) -> None:
    # 22:00 UTC is midnight in Bucharest: the marketing reply waits for 08:00 local (06:00 UTC).
    answered = form("+1d13h", "too_many_emails")
    report, recorded = await play(simulator, sleepy, scenario(ASLEEP, answered, until="+10d"))
    assert report.outcome == "completed"
    assert report.steps == ["feedback_email", "wait_for_answer", "bad_experience",
                            "too_many_emails", "monthly_digest", "answer_letter",
                            "mark_answered"]
    assert report.path[4].note == "set newsletter_frequency"
    assert sends(report)[1] == ("answer_letter", "email", "sleepy-feedback-answer", "sent",
                                after(days=1, hours=21))
    assert "one digest a month" in recorded.of("sleepy-feedback-answer").parts["body"]


# --------------------------------------------------------------------------- 3. service arrival

EVENING = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # 18:00 in Bucharest on the due day
DUE = {"at": "+0s", "event": "date_attribute_reached",
       "properties": {"attribute": "service_arrival_date",
                      "journey": "service-arrival-confirmation", "date": "2026-03-02"}}
SERVICE: dict[str, Any] = {"service_arrival_date": "2026-03-02", "service_type": "technician visit",
           "service_reference": "WO-5531", "last_name": "Pop"}


def reply(at: str, body: str) -> dict[str, Any]:
    """An inbound SMS as the Twilio webhook stores it (no journey: it answers a number)."""
    return {"at": at, "event": "sms_replied",
            "properties": {"provider": "twilio", "body": body, "to": "+40312345699"}}


@pytest.fixture(scope="module")
def arrival() -> Journey:
    return load("service-arrival-confirmation")


async def test_service_not_received_apology_manager_alert_and_task(
    simulator: Simulator, arrival: Journey
) -> None:
    said_no = reply("+1h", "No, nobody came")
    report, recorded = await play(
        simulator, arrival,
        scenario(DUE, said_no, now="2026-03-02T16:00:00Z", until="+3d", **SERVICE))
    assert report.outcome == "ended:not_received"
    assert report.steps == ["ask", "wait_for_reply", "positive_reply", "apologise",
                            "alert_manager", "forward_to_service", "not_received"]
    assert report.path[2].note.startswith("else")
    assert sends(report, EVENING) == [
        ("ask", "sms", "service-arrival-question", "sent", after()),
        ("apologise", "sms", "service-arrival-apology", "sent", after(hours=1)),
    ]
    assert [(a.step, a.to, a.template, a.status, minutes(a.at - EVENING))
            for a in report.alerts] == [
        ("alert_manager", "slack:#service-managers", "service-arrival-manager-alert", "sent",
         after(hours=1)),
    ]
    (alert,) = recorded.alerts
    assert alert.destination == "#service-managers"
    assert '"No, nobody came"' in alert.text
    assert "Ana Pop" in alert.text and "+40722000111" in alert.text and "WO-5531" in alert.text
    assert [(t.queue, t.title) for t in report.tasks] == [
        ("customer-service", "Resend or reschedule technician visit WO-5531 for Ana"),
    ]
    question = recorded.of("service-arrival-question").parts["body"]
    assert question == ("Hi Ana, your technician visit (WO-5531) was due today. "
                        "Did it arrive? Reply YES or NO.")


async def test_service_confirmed_on_the_second_day_gets_thanks(
    simulator: Simulator, arrival: Journey
) -> None:
    said_yes = reply("+1d30m", "YES")
    report, _ = await play(
        simulator, arrival,
        scenario(DUE, said_yes, now="2026-03-02T16:00:00Z", until="+3d", **SERVICE))
    assert report.outcome == "ended:confirmed"
    assert report.steps == ["ask", "wait_for_reply", "ask_again", "wait_for_second_reply",
                            "positive_reply", "thank", "confirmed"]
    assert sends(report, EVENING) == [
        ("ask", "sms", "service-arrival-question", "sent", after()),
        ("ask_again", "sms", "service-arrival-question-again", "sent", after(days=1)),
        ("thank", "sms", "service-arrival-thanks", "sent", after(days=1, mins=30)),
    ]
    assert report.alerts == [] and report.tasks == []


async def test_service_without_any_reply_ends_without_alert(
    simulator: Simulator, arrival: Journey
) -> None:
    report, _ = await play(simulator, arrival,
                           scenario(DUE, now="2026-03-02T16:00:00Z", until="+3d", **SERVICE))
    assert report.outcome == "ended:no_answer"
    assert report.steps == ["ask", "wait_for_reply", "ask_again", "wait_for_second_reply",
                            "no_answer"]
    assert [s.template for s in report.sends] == ["service-arrival-question",
                                                  "service-arrival-question-again"]
    assert report.alerts == [] and report.tasks == []


# --------------------------------------------------------------------------- 4. course material

NUMBER = "+40312345600"  # the lecture's virtual number in the journey's trigger


def texted(at: str, body: str, to: str = NUMBER) -> dict[str, Any]:
    return {"at": at, "event": "sms_replied",
            "properties": {"provider": "twilio", "body": body, "to": to}}


@pytest.fixture(scope="module")
def course() -> Journey:
    return load("course-material-by-sms")


async def test_course_keyword_starts_the_drip_of_material(
    simulator: Simulator, course: Journey
) -> None:
    report, recorded = await play(simulator, course,
                                  scenario(texted("+0s", "Slides AI101"), until="+10d"))
    assert report.outcome == "completed"
    assert report.steps == ["join_list", "slides", "wait_day_2", "daytime_day_2", "recording",
                            "wait_day_5", "daytime_day_5", "exercises", "wait_day_9",
                            "daytime_day_9", "next_lecture"]
    assert report.path[0].note == "tag +course-material-sms"
    assert sends(report) == [
        ("slides", "sms", "course-sms-slides", "sent", after()),
        ("recording", "sms", "course-sms-recording", "sent", after(days=2)),
        ("exercises", "sms", "course-sms-exercises", "sent", after(days=5)),
        ("next_lecture", "sms", "course-sms-next-lecture", "sent", after(days=9)),
    ]
    links = [body.split("https://", 1)[1].split()[0] for body in recorded.bodies("sms")]
    assert links == ["learn.example.com/ai101/slides", "learn.example.com/ai101/recording",
                     "learn.example.com/ai101/exercises", "learn.example.com/ai101/next"]


async def test_course_late_keyword_waits_for_daytime_and_stop_ends_it(
    simulator: Simulator, course: Journey
) -> None:
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Bucharest
    stop = {"at": "+6d", "event": "sms_unsubscribed",
            "properties": {"provider": "twilio", "body": "STOP", "keyword": "stop"}}
    report, _ = await play(simulator, course, scenario(
        texted("+0s", "slides"), stop, now="2026-03-02T20:30:00Z", until="+10d"))
    assert report.outcome == "unsubscribed"
    assert report.steps == ["join_list", "slides", "wait_day_2", "daytime_day_2", "recording",
                            "wait_day_5", "daytime_day_5", "exercises", "wait_day_9"]
    # Day 2 falls at 22:30 local: the recording waits for 09:00 (07:00 UTC) the next morning.
    assert sends(report, late) == [
        ("slides", "sms", "course-sms-slides", "sent", after()),
        ("recording", "sms", "course-sms-recording", "sent", after(days=2, hours=10, mins=30)),
        ("exercises", "sms", "course-sms-exercises", "sent", after(days=5, hours=10, mins=30)),
    ]


async def test_course_other_words_or_numbers_do_not_enter(
    simulator: Simulator, course: Journey
) -> None:
    report, _ = await play(simulator, course, scenario(
        texted("+0s", "slides", to="+40399999999"), texted("+1m", "hello, where are the slides?"),
        until="+1d"))
    assert report.outcome == "not_entered"
    assert report.sends == []
    assert [p.step for p in report.path] == ["trigger", "trigger"]
    assert all(p.note.startswith("not entered: trigger.where") for p in report.path)


# --------------------------------------------------------------------------- 5. satisfaction survey

ORDER = {"at": "+0s", "event": "order_completed",
         "properties": {"order_id": "A-1001", "type": "sale",
                        "survey_url": "https://shop.example.com/survey"}}


def answer(at: str, score: int, comment: str = "") -> dict[str, Any]:
    return {"at": at, "event": "survey_answered",
            "properties": {"survey": "satisfaction", "order_id": "A-1001", "score": score,
                           "comment": comment}}


@pytest.fixture(scope="module")
def survey() -> Journey:
    return load("satisfaction-survey")


async def test_survey_promoter_is_thanked_and_asked_for_a_review(
    simulator: Simulator, survey: Journey
) -> None:
    report, recorded = await play(simulator, survey, scenario(
        ORDER, answer("+2h", 10, "Fast delivery"), until="+8d"))
    assert report.outcome == "completed"
    assert report.steps == ["survey", "wait_for_answer", "promoter", "mark_promoter",
                            "ask_for_review"]
    assert report.path[3].note == "set nps_category"
    assert sends(report) == [
        ("survey", "email", "satisfaction-survey", "sent", after()),
        ("ask_for_review", "email", "satisfaction-promoter-thanks", "sent", after(hours=2)),
    ]
    thanks = recorded.of("satisfaction-promoter-thanks").parts["body"]
    assert 'A 10 out of 10' in thanks and '"Fast delivery"' in thanks
    body = recorded.of("satisfaction-survey").parts["body"]
    assert "https://shop.example.com/survey?order=A-1001&score=0" in body
    assert "https://shop.example.com/survey?order=A-1001&score=10" in body
    assert report.tasks == []


async def test_survey_reminder_then_detractor_gets_apology_and_a_call(
    simulator: Simulator, survey: Journey
) -> None:
    report, recorded = await play(simulator, survey, scenario(
        ORDER, answer("+3d5h", 3, "Arrived broken"), until="+8d"))
    assert report.outcome == "completed"
    assert report.steps == ["survey", "wait_for_answer", "reminder", "wait_for_late_answer",
                            "promoter", "passive", "mark_detractor", "apologise", "care_call"]
    assert sends(report) == [
        ("survey", "email", "satisfaction-survey", "sent", after()),
        ("reminder", "email", "satisfaction-survey-reminder", "sent", after(days=3)),
        ("apologise", "email", "satisfaction-detractor-apology", "sent", after(days=3, hours=5)),
    ]
    assert [(t.queue, t.title, minutes(t.at - START), t.due) for t in report.tasks] == [
        ("customer-care", "Call Ana: unhappy with sale A-1001", after(days=3, hours=5),
         report.tasks[0].at + timedelta(days=1)),
    ]
    assert '"Arrived broken"' in recorded.of("satisfaction-detractor-apology").parts["body"]


async def test_survey_by_sms_in_the_morning_and_a_passive_answer(
    simulator: Simulator, survey: Journey
) -> None:
    evening = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 22:00 in Bucharest: quiet hours
    report, recorded = await play(simulator, survey, scenario(
        ORDER, answer("+14h", 8), now="2026-03-02T20:00:00Z", until="+8d",
        contact={"email": None}))
    assert report.outcome == "completed"
    assert report.steps == ["survey", "wait_for_answer", "promoter", "passive", "mark_passive",
                            "what_would_make_it_10"]
    # Held until 09:00 local (07:00 UTC), then by SMS: the contact has no email address.
    assert sends(report, evening) == [
        ("survey", "sms", "satisfaction-survey", "sent", after(hours=11)),
        ("what_would_make_it_10", "sms", "satisfaction-passive-follow-up", "sent",
         after(hours=14)),
    ]
    assert recorded.bodies("sms")[1].startswith("Thanks for the 8/10!")


async def test_survey_without_any_answer_ends_after_one_reminder(
    simulator: Simulator, survey: Journey
) -> None:
    report, _ = await play(simulator, survey, scenario(ORDER, until="+8d"))
    assert report.outcome == "ended:no_answer"
    assert report.steps == ["survey", "wait_for_answer", "reminder", "wait_for_late_answer",
                            "no_answer"]
    assert [s.template for s in report.sends] == ["satisfaction-survey",
                                                  "satisfaction-survey-reminder"]


# --------------------------------------------------------------------------- 6. appointments

BOOKING = {"appointment_id": "B-9", "service": "dental check-up",
           "when": "Thursday 5 March, 10:30", "address": "Calea Victoriei 12, Bucuresti",
           "location_phone": "+40 21 555 0100"}


def booked(at: str, starts_at: str, **extra: Any) -> list[dict[str, Any]]:
    """What the booking system sends: the appointment time on the profile, then the event."""
    return [{"at": at, "type": "identify", "traits": {"next_appointment_at": starts_at}},
            {"at": at, "event": "appointment_booked", "properties": {**BOOKING, **extra}}]


@pytest.fixture(scope="module")
def appointment() -> Journey:
    return load("appointment-confirmation")


async def test_appointment_confirmed_reminded_then_rated_and_upsold(
    simulator: Simulator, appointment: Journey
) -> None:
    rated = {"at": "+3d3h", "event": "sms_replied",
             "properties": {"provider": "twilio", "body": "5", "to": "+40312345699"}}
    report, recorded = await play(simulator, appointment, scenario(
        *booked("+0s", "2026-03-05T08:30:00Z"), rated, until="+6d"))
    assert report.outcome == "completed"
    assert report.steps == ["confirm", "day_before", "booked_just_now", "remind", "after_visit",
                            "ask_feedback", "wait_for_rating", "happy", "upsell"]
    assert sends(report) == [
        ("confirm", "sms", "appointment-confirmation", "sent", after()),
        # 10:00 in Bucharest on Wednesday, the day before.
        ("remind", "sms", "appointment-reminder", "sent", after(days=1, hours=23)),
        # The appointment starts Thursday 08:30 UTC: three hours later.
        ("ask_feedback", "sms", "appointment-feedback", "sent", after(days=3, hours=2, mins=30)),
        ("upsell", "sms", "appointment-upsell", "sent", after(days=3, hours=3)),
    ]
    reminder = recorded.of("appointment-reminder").parts["body"]
    assert "https://waze.com/ul?q=Calea+Victoriei+12%2C+Bucuresti&navigate=yes" in reminder
    assert "tel:+40215550100" in reminder
    assert "tomorrow, Thursday 5 March, 10:30" in reminder


async def test_appointment_cancelled_before_the_reminder(
    simulator: Simulator, appointment: Journey
) -> None:
    cancelled = {"at": "+1d", "event": "appointment_cancelled",
                 "properties": {"appointment_id": "B-9"}}
    report, _ = await play(simulator, appointment, scenario(
        *booked("+0s", "2026-03-05T08:30:00Z"), cancelled, until="+6d"))
    assert report.outcome == "cancelled"
    assert report.steps == ["confirm", "day_before"]
    assert sends(report) == [("confirm", "sms", "appointment-confirmation", "sent", after())]


async def test_appointment_booked_after_reminder_time_gets_no_reminder(
    simulator: Simulator, appointment: Journey
) -> None:
    evening = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)  # 20:00 Monday in Bucharest
    report, recorded = await play(simulator, appointment, scenario(
        *booked("+0s", "2026-03-03T07:00:00Z", when="Tuesday 3 March, 09:00",
                latitude=44.4396, longitude=26.0963),
        now="2026-03-02T18:00:00Z", until="+4d", contact={"phone": None}))
    assert report.outcome == "completed"
    assert report.steps == ["confirm", "day_before", "booked_just_now", "after_visit",
                            "ask_feedback", "wait_for_rating"]
    assert "already passed" in report.path[1].note
    assert report.path[2].note.startswith("then")
    # No phone: the confirmation goes by email; the SMS rating question cannot go at all.
    assert sends(report, evening) == [
        ("confirm", "email", "appointment-confirmation", "sent", after()),
        ("ask_feedback", "sms", "appointment-feedback", "skipped:unreachable", after(hours=16)),
    ]
    assert recorded.of("appointment-confirmation").parts["subject"] == (
        "Booked: dental check-up, Tuesday 3 March, 09:00")
    # The coordinates, when the booking sends them, make the map link exact.
    reminder = render_part(appointment, "appointment-reminder", "sms", contact={"id": "c"},
                           event={"properties": {**BOOKING, "latitude": 44.4396,
                                                 "longitude": 26.0963}})
    assert "https://waze.com/ul?ll=44.4396,26.0963&navigate=yes" in reminder["body"]
