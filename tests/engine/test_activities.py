"""Activities run through Temporal's ActivityEnvironment against a real SQLite store.

Each test asserts what the activity left in the store (ledger rows, score history, tasks,
profiles, entries), since that is what journeys, the simulator and `cairn outbox` read.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pydantic import TypeAdapter
from sqlalchemy import select
from temporalio.activity import _Definition
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import (
    ActionActivities,
    ContactActivities,
    DeliveryActivities,
    EntryActivities,
    ProfileActivities,
    ScoreActivities,
    TaskActivities,
    delivery_activities,
    journey_activities,
)
from activities.update import change_source
from cairn import contracts
from cairn.conditions import Condition, parse_condition
from cairn.contact import ContactSnapshot
from cairn.contracts import (
    ActionRequest,
    ConditionRequest,
    EntryFinish,
    LoadContactRequest,
    ProfileUpdateRequest,
    ScoreRequest,
    SendRequest,
    StepContext,
    TaskRequest,
)
from cairn.events.attribute_changes import change_message_id
from cairn.journey import (
    AudienceSync,
    Notify,
    ProfileUpdate,
    QuietHours,
    ScoreChange,
    Send,
    StartJourney,
    TaskSpec,
    Webhook,
)
from cairn.journey_run import EventMessage
from cairn.store import contacts, deliveries, entries, events, scores, tasks
from cairn.store.db import Store
from cairn.store.schema import SendHold
from cairn.sweeps import (
    ENTER_IMPORTED,
    ENTER_SCHEDULED,
    PLAN_IMPORTED,
    PLAN_SCHEDULED,
    SWEEP_DATE_ATTRIBUTES,
    SWEEP_SEGMENTS,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WID = "journey/cart-abandonment/c-1"
TEMPLATE = {
    "email": {
        "subject": "Your cart misses you, {{ contact.first_name | default: 'there' }}",
        "body": "{{ event.properties.total }} EUR waiting. {{ journey.offer.code }}",
    },
    "sms": {"body": "Cart: {{ event.properties.total }} EUR"},
}
TRIGGER = EventMessage(message_id="m-1", event="cart_item_added", contact_id="c-1",
                       properties={"total": 25}, timestamp=NOW)


@pytest_asyncio.fixture
async def store_with_ana(sqlite_store: Store) -> Store:
    """The SQLite store holding contact c-1, Ana, whom the activities here act on."""
    await _contact(sqlite_store)
    return sqlite_store


async def _contact(store: Store, **changes: Any) -> None:
    data: dict[str, Any] = {
        "id": "c-1", "timezone": "Europe/Bucharest", "email": "Ana@Example.com ",
        "phone": "+40 722 000 000", "push_tokens": [], "consent": {"marketing": True},
        "attributes": {"first_name": "Ana", "cart": {"items": 2}}, "scores": {"global": 35},
        "segments": ["buyers"],
    }
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot.model_validate({**data, **changes}), NOW)


def context(step: str = "email_reminder", *, now: datetime = NOW, iteration: int = 1,
            ) -> StepContext:
    return StepContext(workflow_id=WID, journey_key="cart-abandonment", journey_version=1,
                       contact_id="c-1", step=step, iteration=iteration, now=now)


def send_request(*, channel: str | None = None, channels: list[str] | None = None,
                 category: str = "marketing", now: datetime = NOW,
                 quiet: bool = False, template: dict[str, Any] | None = None) -> SendRequest:
    send = Send.model_validate({
        **({"channels": channels} if channels else {"channel": channel or "email"}),
        "template": "cart-reminder", "category": category,
    })
    return SendRequest(
        context=context(now=now), send=send, template=template or TEMPLATE, trigger=TRIGGER,
        journey_context={"offer": {"code": "CART10"}},
        quiet_hours=QuietHours.model_validate({"from": "21:00", "to": "08:00"}) if quiet else None,
        default_timezone="UTC",
    )


async def _ledger(store: Store) -> list[deliveries.Delivery]:
    async with store.session() as s:
        return await deliveries.deliveries_for(s, workflow_id=WID)


env = ActivityEnvironment()


# --------------------------------------------------------------------------- registration


def test_activity_lists_cover_every_action_name() -> None:
    def names(functions: list[Any]) -> set[str]:
        found = set()
        for function in functions:
            definition = _Definition.from_callable(function)
            assert definition is not None and definition.name is not None
            found.add(definition.name)
        return found

    store: Any = object()
    everything = {
        contracts.LOAD_CONTACT, contracts.PLAN_WAIT, contracts.EVALUATE_CONDITION,
        contracts.PREPARE_SEND,
        contracts.DELIVER_MESSAGE, contracts.CHANGE_SCORE, contracts.UPDATE_PROFILE,
        contracts.CREATE_TASK, contracts.RECORD_ACTION, contracts.FINISH_ENTRY,
        contracts.CLOSE_FAILED_ENTRIES, contracts.SETTLE_UNCONFIRMED, contracts.CHOOSE_ARM,
    }
    assert names(delivery_activities(store)) == {contracts.DELIVER_MESSAGE}
    sweeps = {SWEEP_SEGMENTS, SWEEP_DATE_ATTRIBUTES, ENTER_SCHEDULED,  # workflows/sweeps.py
              PLAN_SCHEDULED, ENTER_IMPORTED, PLAN_IMPORTED}
    assert names(journey_activities(store)) == (everything - {contracts.DELIVER_MESSAGE}) | sweeps


# --------------------------------------------------------------------------- contacts


async def test_load_contact_and_a_missing_one(store_with_ana: Store) -> None:
    activities = ContactActivities(store_with_ana)
    snapshot = await env.run(activities.load_contact, LoadContactRequest(contact_id="c-1"))
    assert snapshot.scores == {"global": 35} and snapshot.segments == ["buyers"]
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.load_contact, LoadContactRequest(contact_id="c-404"))
    assert raised.value.type == "ContactNotFound" and raised.value.non_retryable
    assert "c-404" in str(raised.value)


def _condition(data: Any) -> Any:
    return TypeAdapter(Condition).validate_python(parse_condition(data))


async def _purchase(store: Store, message_id: str, at: datetime, total: int) -> None:
    async with store.session() as s, s.begin():
        await events.record_event(s, message_id=message_id, type="track", contact_id="c-1",
                                  name="purchase", properties={"total": total}, timestamp=at,
                                  received_at=at)


async def test_evaluate_condition_counts_events_in_the_window(store_with_ana: Store) -> None:
    await _purchase(store_with_ana, "p-1", NOW - timedelta(days=10), 80)
    await _purchase(store_with_ana, "p-2", NOW - timedelta(days=3), 30)
    await _purchase(store_with_ana, "p-3", NOW + timedelta(days=1), 99)  # after the journey's now
    activities = ContactActivities(store_with_ana)

    async def decide(condition: Any, entered_at: datetime | None = None) -> Any:
        return await env.run(activities.evaluate_condition, ConditionRequest(
            context=context("decide"), condition=_condition(condition), trigger=TRIGGER,
            entered_at=entered_at,
        ))

    within = await decide({"has_done": {"event": "purchase", "within": "7d"}})
    assert within.result and "has_done purchase 1x within 7d" in within.reason
    twice = await decide({"has_done": {"event": "purchase", "within": "7d", "count": {"gte": 2}}})
    assert not twice.result
    ever = await decide({"has_done": {"event": "purchase", "count": {"gte": 2}}})
    assert ever.result and "2x" in ever.reason
    filtered = await decide({"has_done": {"event": "purchase", "where": {"total": {"gte": 50}},
                                          "count": {"eq": 1}}})
    assert filtered.result
    since_entry = await decide({"has_done": {"event": "purchase", "since": "entry"}},
                               entered_at=NOW - timedelta(days=1))
    assert not since_entry.result and "0x since entry" in since_entry.reason
    mixed = await decide({"all": [
        {"attribute": "cart.items", "gt": 0}, {"score": "global", "gte": 30},
        {"in_segment": "buyers"}, {"property": "total", "gte": 20},
        {"reachable": "email"}, {"not": {"reachable": "push"}},
    ]})
    assert mixed.result, mixed.reason
    unreachable = await decide({"reachable": {"channel": "push", "category": "transactional"}})
    assert not unreachable.result and unreachable.reason == "push: no push token"
    spent = await decide({"has_done": {"event": "purchase", "sum": "total",
                                       "total": {"gt": 100}}})
    assert spent.result, spent.reason  # 80 + 30; the purchase after now does not count
    spent_lately = await decide({"has_done": {"event": "purchase", "sum": "total",
                                              "within": "7d", "total": {"gt": 100}}})
    assert not spent_lately.result


async def test_the_condition_activity_decides_on_the_caught_event_in_the_request(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot(id="c-1"), NOW)
    activities = ContactActivities(sqlite_store)
    context = StepContext(workflow_id="journey/x/c-1", journey_key="x", contact_id="c-1",
                          step="check", now=NOW)
    rule = _condition({"all": [{"property": "answer", "event": "form_submitted", "eq": "yes"},
                               {"property": "value", "gte": 20}]})
    request = ConditionRequest(
        context=context, condition=rule,
        trigger=EventMessage(message_id="m-1", event="go", contact_id="c-1",
                             properties={"value": 25}, timestamp=NOW),
        caught_events={"form_submitted": {"event": "form_submitted",
                                          "properties": {"answer": "yes"}}},
    )
    verdict = await ActivityEnvironment().run(activities.evaluate_condition, request)
    assert verdict.result, verdict.reason
    without = request.model_copy(update={"caught_events": {}})
    verdict = await ActivityEnvironment().run(activities.evaluate_condition, without)
    assert not verdict.result and "none caught" in verdict.reason


# --------------------------------------------------------------------------- sends


async def test_deliver_twice_with_one_key_sends_once(store_with_ana: Store) -> None:
    activities = DeliveryActivities(store_with_ana)
    request = send_request(channel="email")
    plan = await env.run(activities.prepare_send, request)
    assert (plan.status, plan.channel) == ("ready", "email")
    assert await _ledger(store_with_ana) == []  # a plan records nothing
    ready = request.model_copy(update={"channel": plan.channel})
    first = await env.run(activities.deliver_message, ready)
    second = await env.run(activities.deliver_message, ready)
    assert first.status == "sent" and second == first
    [row] = await _ledger(store_with_ana)
    assert row.id == first.delivery_id and row.idempotency_key == f"{WID}/email_reminder/1"
    assert (row.kind, row.provider, row.status, row.channel) == ("send", "outbox", "sent", "email")
    assert row.rendered == {"subject": "Your cart misses you, Ana",
                            "body": "25 EUR waiting. CART10"}
    assert row.created_at == NOW and row.sent_at == NOW
    assert row.template == "cart-reminder" and row.category == "marketing"
    assert row.response is not None
    assert row.response["provider"] == "outbox" and row.response["to"] == "Ana@Example.com"
    unsubscribe = row.response["headers"]["List-Unsubscribe"]
    assert unsubscribe.startswith("<http://127.0.0.1:8000/v1/unsubscribe?token=")
    assert row.response["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_a_new_iteration_sends_again(store_with_ana: Store) -> None:
    activities = DeliveryActivities(store_with_ana)
    request = send_request(channel="sms").model_copy(update={"channel": "sms"})
    await env.run(activities.deliver_message, request)
    later = request.model_copy(update={"context": context(iteration=2)})
    await env.run(activities.deliver_message, later)
    rows = await _ledger(store_with_ana)
    assert [r.idempotency_key.rsplit("/", 1)[1] for r in rows] == ["1", "2"]
    assert rows[0].rendered == {"body": "Cart: 25 EUR"}
    assert rows[0].response == {"provider": "outbox", "to": "+40722000000"}


async def test_template_errors_are_permanent_and_recorded(store_with_ana: Store) -> None:
    activities = DeliveryActivities(store_with_ana)
    broken = send_request(channel="email", template={
        "email": {"subject": "ok", "body": "line one\n{% if contact.first_name %}never closed"},
    }).model_copy(update={"channel": "email"})
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.deliver_message, broken)
    assert raised.value.type == "TemplateError" and raised.value.non_retryable
    assert "cart-reminder" in str(raised.value) and "email.body" in str(raised.value)
    assert "line 2" in str(raised.value)
    [row] = await _ledger(store_with_ana)
    assert row.status == "failed" and "email.body" in (row.reason or "")


async def test_missing_channel_part_is_a_template_error(store_with_ana: Store) -> None:
    request = send_request(channel="push").model_copy(update={"channel": "push"})
    await _contact(store_with_ana, push_tokens=["tok-1"])
    with pytest.raises(ApplicationError) as raised:
        await env.run(DeliveryActivities(store_with_ana).deliver_message, request)
    assert raised.value.type == "TemplateError" and "no part for channel 'push'" in str(
        raised.value)


async def test_prepare_without_marketing_consent_records_a_skip(store_with_ana: Store) -> None:
    await _contact(store_with_ana, consent={})
    activities = DeliveryActivities(store_with_ana)
    plan = await env.run(activities.prepare_send, send_request(channel="email"))
    assert plan.status == "skipped:consent" and plan.reason == "email: no marketing consent"
    [row] = await _ledger(store_with_ana)
    assert (row.kind, row.status, row.channel, row.provider) == (
        "send", "skipped:consent", "email", None)
    assert row.reason == "email: no marketing consent" and row.sent_at is None
    # Asked again (a retry), the recorded decision stands and nothing more is written.
    again = await env.run(activities.prepare_send, send_request(channel="email"))
    assert again == plan and len(await _ledger(store_with_ana)) == 1
    # Transactional messages need no marketing consent.
    receipt = send_request(channel="email", category="transactional").model_copy(
        update={"context": context("receipt")})
    assert (await env.run(activities.prepare_send, receipt)).status == "ready"


async def test_prepare_takes_the_first_reachable_channel(store_with_ana: Store) -> None:
    activities = DeliveryActivities(store_with_ana)
    plan = await env.run(activities.prepare_send, send_request(channels=["push", "sms", "email"]))
    assert (plan.status, plan.channel) == ("ready", "sms")
    await _contact(store_with_ana, phone=None, email=None)
    plan = await env.run(activities.prepare_send, send_request(channels=["push", "sms", "email"]))
    assert plan.status == "skipped:unreachable"
    assert plan.reason == ("push: no push token; sms: no phone number; "
                           "email: no email address")
    [row] = await _ledger(store_with_ana)
    assert row.status == "skipped:unreachable" and row.channel == "push"


async def test_prepare_defers_marketing_in_quiet_hours_in_the_contacts_zone(
    store_with_ana: Store,
) -> None:
    activities = DeliveryActivities(store_with_ana)
    # 22:30 in Bucharest (UTC+2 in winter): quiet until 08:00 local = 06:00Z.
    evening = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)
    plan = await env.run(activities.prepare_send, send_request(quiet=True, now=evening))
    assert plan.status == "deferred:quiet_hours" and plan.channel == "email"
    assert plan.hold_until == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    assert "Europe/Bucharest" in plan.reason
    # The night clocks go forward (29 March 2026): 08:00 local is then 05:00Z.
    spring = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)
    plan = await env.run(activities.prepare_send, send_request(quiet=True, now=spring))
    assert plan.hold_until == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)
    # Early morning, still quiet: held until the same morning.
    dawn = datetime(2026, 3, 3, 4, 0, tzinfo=UTC)  # 06:00 local
    plan = await env.run(activities.prepare_send, send_request(quiet=True, now=dawn))
    assert plan.hold_until == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    # Outside quiet hours, and transactional sends at any hour, are ready.
    noon = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    assert (await env.run(activities.prepare_send,
                          send_request(quiet=True, now=noon))).status == "ready"
    receipt = send_request(quiet=True, now=evening, category="transactional")
    assert (await env.run(activities.prepare_send, receipt)).status == "ready"
    assert await _ledger(store_with_ana) == []


async def test_a_hold_is_recorded_when_it_starts_once_and_apart_from_the_ledger(
    store_with_ana: Store,
) -> None:
    activities = DeliveryActivities(store_with_ana)
    evening = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)
    request = send_request(quiet=True, now=evening)
    for _ in range(2):  # a retried plan decides the same hold: one row
        plan = await env.run(activities.prepare_send, request)
        assert plan.status == "deferred:quiet_hours"
    # the lean path (deliver_message plans itself) records the same hold under the same key
    outcome = await env.run(activities.deliver_message, request)
    assert outcome.status == "deferred:quiet_hours"
    async with store_with_ana.session() as s:
        rows = list(await s.scalars(select(SendHold)))
    assert [(r.idempotency_key, r.reason, r.until, r.held_at, r.step, r.template, r.channel)
            for r in rows] == [(request.ledger_key, "quiet_hours",
                                datetime(2026, 3, 3, 6, 0, tzinfo=UTC), evening,
                                request.context.step, "cart-reminder", "email")]
    assert await _ledger(store_with_ana) == []  # nothing sent, nothing claimed
    # held again later the same night (a new end): a second hold of the same send
    later = datetime(2026, 3, 3, 21, 30, tzinfo=UTC)
    await env.run(activities.prepare_send, send_request(quiet=True, now=later))
    async with store_with_ana.session() as s:
        assert len(list(await s.scalars(select(SendHold)))) == 2
    # the morning: the send goes, once
    morning = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    sent = await env.run(activities.deliver_message, send_request(quiet=True, now=morning))
    assert sent.status == "sent"
    assert [row.status for row in await _ledger(store_with_ana)] == ["sent"]


async def test_prepare_uses_the_journey_zone_for_contacts_without_one(
    store_with_ana: Store,
) -> None:
    await _contact(store_with_ana, timezone=None)
    request = send_request(quiet=True, now=datetime(2026, 3, 2, 21, 30, tzinfo=UTC))
    plan = await env.run(DeliveryActivities(store_with_ana).prepare_send, request)
    assert plan.hold_until == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)  # default_timezone UTC


async def test_deliver_rechecks_the_contact(store_with_ana: Store) -> None:
    activities = DeliveryActivities(store_with_ana)
    request = send_request(channel="email")
    plan = await env.run(activities.prepare_send, request)
    await _contact(store_with_ana, suppressed=["email"])  # unsubscribed between plan and delivery
    outcome = await env.run(activities.deliver_message,
                            request.model_copy(update={"channel": plan.channel}))
    assert outcome.status == "skipped:unreachable" and "suppressed" in outcome.reason
    [row] = await _ledger(store_with_ana)
    assert row.status == "skipped:unreachable" and row.rendered == {}


# --------------------------------------------------------------------------- scores, profile, tasks


async def test_change_score_records_history_once_per_step_visit(store_with_ana: Store) -> None:
    activities = ScoreActivities(store_with_ana)
    request = ScoreRequest(context=context("engaged"), change=ScoreChange(add=10))
    first = await env.run(activities.change_score, request)
    again = await env.run(activities.change_score, request)
    assert (first.dimension, first.total) == ("global", 45) and again == first
    reasoned = ScoreRequest(context=context("engaged", iteration=2),
                            change=ScoreChange(dimension="sales", add=-5, reason="went quiet"))
    assert (await env.run(activities.change_score, reasoned)).total == -5
    async with store_with_ana.session() as s:
        history = await scores.score_history(s, workflow_id=WID)
        totals = await scores.scores_of(s, "c-1")
    assert [(h.dimension, h.delta, h.total, h.reason, h.source) for h in history] == [
        ("global", 10, 45, "journey cart-abandonment step engaged", WID),
        ("sales", -5, -5, "went quiet", WID),
    ]
    assert totals == {"global": 45, "sales": -5}


async def test_update_profile(store_with_ana: Store) -> None:
    activities = ProfileActivities(store_with_ana)
    update = ProfileUpdate.model_validate({
        "set": {"cart.items": 0, "stage": "customer", "consent.sms": {"marketing": False}},
        "unset": ["first_name"], "add_tags": ["buyer"],
    })
    request = ProfileUpdateRequest(context=context("mark"), update=update)
    await env.run(activities.update_profile, request)
    await env.run(activities.update_profile, request)  # a retry: same profile
    async with store_with_ana.session() as s:
        snap = await contacts.snapshot(s, "c-1")
    assert snap is not None
    assert snap.attributes == {"cart": {"items": 0}, "stage": "customer"}
    assert snap.consent == {"marketing": True, "sms": {"marketing": False}}
    assert snap.tags == ["buyer"]
    bad = ProfileUpdateRequest(context=context("mark"), update=ProfileUpdate.model_validate(
        {"set": {"timezone": "Mars/Olympus"}}))
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.update_profile, bad)
    assert raised.value.type == "ValidationError" and "Mars/Olympus" in str(raised.value)


async def test_the_profile_activity_moves_the_due_date_once_per_visit(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot.model_validate(
            {"id": "c-1", "attributes": {"emi_due_date": "2026-01-31", "plan": "basic"}}), NOW)
    activities = ProfileActivities(sqlite_store)
    env = ActivityEnvironment()
    update = ProfileUpdate.model_validate({"set": {
        "emi_due_date": "{{ contact.emi_due_date | add_months: 1 }}",
        "plan": "{{ event.properties.plan }}", "offer": "{{ journey.offer.code }}",
        "paid_count": 1,
    }})

    def visit(iteration: int) -> ProfileUpdateRequest:
        return ProfileUpdateRequest(
            context=StepContext(workflow_id="journey/emi/c-1", journey_key="emi",
                                contact_id="c-1", step="paid", iteration=iteration, now=NOW),
            update=update,
            trigger=EventMessage(message_id="m-1", event="go", contact_id="c-1",
                                 properties={"plan": "pro"}, timestamp=NOW),
            journey_context={"offer": {"code": "EMI5"}},
        )

    async def attributes() -> dict[str, Any]:
        async with sqlite_store.session() as s:
            snapshot = await contacts.snapshot(s, "c-1")
        assert snapshot is not None
        return snapshot.attributes

    await env.run(activities.update_profile, visit(1))
    assert await attributes() == {"emi_due_date": "2026-02-28", "plan": "pro",
                                  "offer": "EMI5", "paid_count": 1}
    await env.run(activities.update_profile, visit(1))  # a retry of the same visit
    assert (await attributes())["emi_due_date"] == "2026-02-28"
    async with sqlite_store.session() as s:
        changed = await events.event_by_message_id(s, change_message_id(
            change_source(visit(1).context), "emi_due_date"))
    assert changed is not None
    assert changed.properties == {"attribute": "emi_due_date", "from": "2026-01-31",
                                  "to": "2026-02-28"}
    await env.run(activities.update_profile, visit(2))  # next month's visit moves it on
    assert (await attributes())["emi_due_date"] == "2026-03-28"

    broken = visit(3).model_copy(update={"update": ProfileUpdate.model_validate(
        {"set": {"emi_due_date": "{{ contact.plan | add_months: 1 }}"}})})
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.update_profile, broken)
    assert raised.value.type == "TemplateError" and raised.value.non_retryable
    assert "update.set.emi_due_date" in str(raised.value)
    assert (await attributes())["emi_due_date"] == "2026-03-28"


async def test_create_task_renders_and_is_idempotent(store_with_ana: Store) -> None:
    activities = TaskActivities(store_with_ana)
    spec = TaskSpec.model_validate({
        "queue": "sales-calls", "due": "2d",
        "title": "Call {{ contact.first_name }} about {{ event.properties.total }} EUR",
        "note": "Phone {{ contact.phone }}",
    })
    request = TaskRequest(context=context("call"), task=spec, trigger=TRIGGER)
    first = await env.run(activities.create_task, request)
    again = await env.run(activities.create_task, request)
    assert again == first
    async with store_with_ana.session() as s:
        [task] = await tasks.list_tasks(s, workflow_id=WID)
    assert task.id == first.task_id and task.queue == "sales-calls"
    assert task.title == "Call Ana about 25 EUR" and task.note == "Phone +40 722 000 000"
    assert task.due_at == NOW + timedelta(days=2) and task.created_at == NOW
    assert (task.journey_key, task.step, task.contact_id, task.status) == (
        "cart-abandonment", "call", "c-1", "open")
    broken = TaskRequest(context=context("call2"), task=TaskSpec(queue="q", title="{{ x | nope }}"))
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.create_task, broken)
    assert raised.value.type == "TemplateError"


# --------------------------------------------------------------------------- actions and entries


async def test_record_action_for_each_kind(store_with_ana: Store) -> None:
    activities = ActionActivities(store_with_ana)
    notify = ActionRequest(
        context=context("alert"), kind="notify",
        notify=Notify(to="slack:#sales", template="hot-lead"),
        template={"email": {"subject": "x", "body": "y"},
                  "slack": {"text": "{{ contact.first_name }} added {{ event.properties.total }}"}},
        trigger=TRIGGER,
    )
    webhook = ActionRequest(
        context=context("recommend"), kind="webhook",
        webhook=Webhook(url="https://api.example/recs/{{ contact.id }}", method="POST",
                        body='{"total": {{ event.properties.total }}}',
                        headers={"Authorization": "Bearer secret"}),
        trigger=TRIGGER,
    )
    audience = ActionRequest(
        context=context("retarget"), kind="audience",
        audience=AudienceSync(sync="facebook", audience="cart-abandoners"),
    )
    hand_off = ActionRequest(context=context("next"), kind="start_journey",
                             start_journey=StartJourney(journey="win-back"))
    results = [await env.run(activities.record_action, r)
               for r in (notify, webhook, audience, hand_off)]
    assert all(r.status == "recorded" for r in results)
    repeated = await env.run(activities.record_action, webhook)
    assert repeated.delivery_id == results[1].delivery_id

    rows = {row.kind: row for row in await _ledger(store_with_ana)}
    assert len(await _ledger(store_with_ana)) == 4
    assert all(r.provider == "outbox" and r.status == "recorded" for r in rows.values())
    assert rows["notify"].channel == "slack" and rows["notify"].template == "hot-lead"
    assert rows["notify"].rendered == {"to": "slack:#sales", "text": "Ana added 25"}
    assert rows["webhook"].rendered == {
        "method": "POST", "url": "https://api.example/recs/c-1", "body": '{"total": 25}',
        "headers": ["Authorization"],
    }
    assert "secret" not in str(rows["webhook"].rendered)
    expected_email = hashlib.sha256(b"ana@example.com").hexdigest()
    expected_phone = hashlib.sha256(b"40722000000").hexdigest()
    assert rows["audience"].rendered == {
        "sync": "facebook", "audience": "cart-abandoners", "action": "add",
        "email_sha256": expected_email, "phone_sha256": expected_phone,
    }
    assert rows["start_journey"].rendered == {"journey": "win-back"}
    assert rows["start_journey"].idempotency_key == f"{WID}/next/1"


async def test_record_action_without_its_body_is_refused(store_with_ana: Store) -> None:
    with pytest.raises(ApplicationError) as raised:
        await env.run(ActionActivities(store_with_ana).record_action,
                      ActionRequest(context=context("x"), kind="webhook"))
    assert raised.value.type == "ValidationError" and "webhook" in str(raised.value)


async def test_finish_entry_closes_the_runs_entry(store_with_ana: Store) -> None:
    async with store_with_ana.session() as s, s.begin():
        await entries.record_entry(s, journey_key="cart-abandonment", version=1,
                                   contact_id="c-1", entry_key=None, workflow_id=WID,
                                   trigger_message_id="m-1", entered_at=NOW)
    finish = EntryFinish(workflow_id=WID, journey_key="cart-abandonment", contact_id="c-1",
                         outcome="converted", now=NOW + timedelta(hours=3))
    activities = EntryActivities(store_with_ana)
    await env.run(activities.finish_entry, finish)
    await env.run(activities.finish_entry, finish)  # a retry finds nothing open
    async with store_with_ana.session() as s:
        [row] = await entries.entries_for(s, "cart-abandonment", "c-1")
    assert (row.outcome, row.ended_at) == ("converted", NOW + timedelta(hours=3))
