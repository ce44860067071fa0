"""The journey report from stored entries, deliveries and feedback with known outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cairn.reports import UnknownJourney, journey_report
from cairn.store.db import Store
from cairn.store.schema import (
    Delivery,
    DeliveryFeedback,
    DeliveryLink,
    Entry,
    Event,
    InboxMessage,
    SendHold,
    StepTransitionRecord,
)
from tests.engine_support import publish

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = "cart-abandonment"
DEFINITION: dict[str, Any] = {
    "key": KEY, "name": "Reduce cart abandonment",
    "trigger": {"event": "cart_item_added"},
    "exit": [{"event": "checkout_completed", "goal": "converted"},
             {"event": "cart_emptied", "goal": "gave_up"}],
    "start": "email_reminder",
    "steps": {"email_reminder": {"send": {"channel": "email", "template": "cart-reminder"},
                                 "next": "end"}},
}


def entry(n: int, outcome: str | None, *, version: int = 1, minutes: float = 0,
          entered: datetime = T0) -> Entry:
    return Entry(journey_key=KEY, version=version, contact_id=f"c-{n}", entry_key=None,
                 workflow_id=f"journey/{KEY}/c-{n}", trigger_message_id=None, entered_at=entered,
                 ended_at=None if outcome is None else entered + timedelta(minutes=minutes),
                 outcome=outcome)


def send(n: int, status: str, *, step: str = "email_reminder", channel: str = "email",
         template: str = "cart-reminder", at: datetime = T0 + timedelta(hours=2),
         message_id: str | None = None) -> Delivery:
    return Delivery(idempotency_key=f"journey/{KEY}/c-{n}/{step}/0", kind="send",
                    workflow_id=f"journey/{KEY}/c-{n}", journey_key=KEY, step=step,
                    contact_id=f"c-{n}", channel=channel, provider="postmark",
                    provider_message_id=message_id, template=template, category="marketing",
                    status=status, reason=None, rendered={}, response=None, created_at=at,
                    sent_at=at if status == "sent" else None, planned_at=at, accepted_at=None)


def feedback(n: int, delivery: Delivery | None, kind: str, *, channel: str = "email",
             at: datetime = T0 + timedelta(hours=3)) -> DeliveryFeedback:
    return DeliveryFeedback(
        dedupe_key=f"feedback/{n}/{kind}/{at.isoformat()}",
        delivery_id=delivery.id if delivery is not None else None, contact_id=f"c-{n}",
        provider="postmark", kind=kind, channel=channel, recipient=None, permanent=False,
        detail={}, occurred_at=at, received_at=at)


async def add(store: Store, *rows: Any) -> list[Any]:
    async with store.session() as s, s.begin():
        s.add_all(rows)
        await s.flush()
        return list(rows)


async def test_the_funnel_counts_each_outcome_per_goal_and_version(store: Store) -> None:
    await publish(store, DEFINITION)
    await add(
        store,
        entry(1, "converted", minutes=30), entry(2, "converted", minutes=90),
        entry(3, "converted", minutes=60), entry(4, "gave_up", minutes=10),
        entry(5, "completed", minutes=120), entry(6, "ended:holdout"),
        entry(7, "removed"), entry(8, "failed"), entry(9, "failed:reentered"),
        entry(10, None), entry(11, None),
        entry(12, "converted", version=2, minutes=5),
        entry(13, "converted", minutes=1, entered=T0 - timedelta(days=3)),
    )
    report = await journey_report(store, KEY, since=T0 - timedelta(hours=1), now=T0)
    funnel = report.funnel
    assert (funnel.entries, funnel.active, funnel.completed) == (12, 2, 1)
    assert (funnel.removed, funnel.failed, funnel.reentered) == (1, 2, 1)
    assert funnel.ended == {"holdout": 1}
    assert funnel.conversions == 5
    assert funnel.conversion_rate == pytest.approx(5 / 12)
    assert funnel.median_seconds_to_convert == 30 * 60  # 5, 10, 30, 60, 90 minutes
    goals = {g.goal: g for g in funnel.goals}
    assert goals["converted"].conversions == 4
    assert goals["converted"].median_seconds_to_convert == 45 * 60  # 5, 30, 60, 90
    assert goals["gave_up"].conversions == 1
    assert goals["gave_up"].rate == pytest.approx(1 / 12)
    assert [(v.version, v.entries, v.conversions) for v in report.versions] == [(1, 11, 4),
                                                                              (2, 1, 1)]
    # no step transitions stored: only the open entries are placed, in the first step
    assert [(s.step, s.reached, s.waiting) for s in report.steps] == [("email_reminder", 2, 2)]
    assert funnel.conversion_interval is not None
    low, high = funnel.conversion_interval
    assert low < 5 / 12 < high

    one = await journey_report(store, KEY, version=1, now=T0)
    assert one.funnel.entries == 12  # the entry three days earlier counts without a window
    assert [v.version for v in one.versions] == [1]


async def test_message_metrics_count_ledger_statuses_and_attributed_feedback(
    store: Store,
) -> None:
    await publish(store, DEFINITION)
    sent = await add(store, *(send(n, "sent", message_id=f"pm-{n}") for n in range(1, 11)))
    await add(
        store,
        send(11, "failed"), send(12, "unconfirmed"), send(13, "sending"),
        send(14, "skipped:consent"), send(15, "skipped:consent"),
        send(16, "skipped:unreachable"), send(17, "skipped:quiet_hours"),
        send(18, "skipped:frequency_cap"),
        send(19, "sent", step="inbox_note", channel="in_app", template="cart-note"),
        send(20, "sent", step="inbox_note", channel="in_app", template="cart-note"),
        Delivery(idempotency_key="other/1", kind="notify", journey_key=KEY, step="alert",
                 status="recorded", rendered={}, created_at=T0),
    )
    delivered = [feedback(n, sent[n - 1], "delivered") for n in range(1, 10)]
    opened = [feedback(n, sent[n - 1], "opened") for n in (1, 2, 3, 4, 5, 6)]
    opened_again = feedback(1, sent[0], "opened", at=T0 + timedelta(hours=5))
    clicked = [feedback(n, sent[n - 1], "clicked") for n in (1, 2)]
    await add(store, *delivered, *opened, opened_again, *clicked,
              feedback(10, sent[9], "bounced"), feedback(9, sent[8], "complained"),
              feedback(8, sent[7], "resubscribed"))
    # Unsubscribes naming no message: the signed link's event, and a report without a delivery.
    await add(
        store,
        Event(message_id="unsubscribe/abc", type="track", contact_id="c-3", name="unsubscribed",
              properties={"channel": "email", "source": "link"},
              timestamp=T0 + timedelta(hours=4), received_at=T0 + timedelta(hours=4)),
        feedback(4, None, "unsubscribed", at=T0 + timedelta(hours=4)),
        # before any message: nothing to attribute it to
        Event(message_id="unsubscribe/early", type="track", contact_id="c-5",
              name="unsubscribed", properties={"channel": "email"}, timestamp=T0,
              received_at=T0),
        InboxMessage(delivery_key=f"journey/{KEY}/c-19/inbox_note/0", contact_id="c-19",
                     channel="in_app", journey_key=KEY, template="cart-note", parts={},
                     created_at=T0, read_at=T0 + timedelta(hours=3)),
        InboxMessage(delivery_key=f"journey/{KEY}/c-20/inbox_note/0", contact_id="c-20",
                     channel="in_app", journey_key=KEY, template="cart-note", parts={},
                     created_at=T0),
    )
    report = await journey_report(store, KEY, now=T0)
    rows = {m.step: m for m in report.messages}
    assert set(rows) == {"email_reminder", "inbox_note"}
    email = rows["email_reminder"]
    assert (email.template, email.channel, email.variant) == ("cart-reminder", "email", None)
    assert (email.sent, email.delivered, email.opened, email.clicked) == (10, 9, 6, 2)
    assert (email.bounced, email.complained, email.unsubscribed) == (1, 1, 2)
    assert (email.failed, email.unconfirmed, email.sending) == (1, 1, 1)
    assert email.skipped == {"consent": 2, "unreachable": 1, "frequency_cap": 1,
                             "quiet_hours": 1}
    assert email.rates.delivery == pytest.approx(0.9)
    assert email.rates.open == pytest.approx(0.6)
    assert email.rates.click == pytest.approx(0.2)
    assert email.rates.click_to_open == pytest.approx(2 / 6)
    assert email.rates.unsubscribe == pytest.approx(0.2)
    assert email.rates.failure == pytest.approx(1 / 12)
    assert email.rates.skip == pytest.approx(5 / 17)
    inbox = rows["inbox_note"]
    assert (inbox.sent, inbox.delivered, inbox.opened) == (2, 2, 1)

    later = await journey_report(store, KEY, since=T0 + timedelta(hours=3), now=T0)
    assert later.messages == []


async def test_an_unknown_journey_is_refused(store: Store) -> None:
    with pytest.raises(UnknownJourney, match="publish it first"):
        await journey_report(store, "nope")


def visit(n: int, seq: int, step: str, left_by: str | None, next_step: str | None = None, *,
          entered: datetime = T0, version: int = 1) -> StepTransitionRecord:
    at = entered + timedelta(minutes=seq)
    return StepTransitionRecord(
        journey_key=KEY, version=version, workflow_id=f"journey/{KEY}/c-{n}", entry_id=f"run-{n}",
        contact_id=f"c-{n}", entered_at=entered, seq=seq, step=step, visit=1, reached_at=at,
        left_by=left_by, left_at=None if left_by is None else at, next_step=next_step)


STEPPED: dict[str, Any] = {
    **DEFINITION, "start": "wait_1h",
    "steps": {"wait_1h": {"wait": "1h", "next": "email_reminder"},
              "email_reminder": {"send": {"channel": "email", "template": "cart-reminder"},
                                 "next": "wait_1d"},
              "wait_1d": {"wait": "1d", "next": "end"}},
}


async def test_steps_place_open_entries_by_the_last_visit_their_runs_wrote(store: Store) -> None:
    await publish(store, STEPPED)
    await add(
        store,
        *(entry(n, None) for n in (1, 2, 3, 4)), entry(5, "converted", minutes=30),
        entry(6, "completed", minutes=2000),
        # 1: nothing written yet (waits in the first step)
        # 2: the wait's visit written, not left: still there
        visit(2, 1, "wait_1h", None),
        # 3: the email step written as left toward wait_1d: waits there (its visit unwritten)
        visit(3, 1, "wait_1h", "next", "email_reminder"),
        visit(3, 2, "email_reminder", "next", "wait_1d"),
        # 4: in the email step (its activity wrote the visit, the leave is not written yet)
        visit(4, 1, "wait_1h", "next", "email_reminder"),
        visit(4, 2, "email_reminder", None),
        # 5: caught by the goal in the first wait; 6: went all the way
        visit(5, 1, "wait_1h", "exit:converted", "end"),
        visit(6, 1, "wait_1h", "next", "email_reminder"),
        visit(6, 2, "email_reminder", "next", "wait_1d"),
        visit(6, 3, "wait_1d", "next", "end"),
        # an entry of another version
        visit(7, 1, "wait_1h", None, version=2),
    )
    report = await journey_report(store, KEY, version=1)
    steps = {s.step: (s.kind, s.reached, s.waiting, s.left, s.exited) for s in report.steps}
    assert steps == {
        "wait_1h": ("wait", 6, 2, {"next": 3}, {"converted": 1}),
        "email_reminder": ("send", 3, 1, {"next": 2}, {}),
        "wait_1d": ("wait", 2, 1, {"next": 1}, {}),
    }
    later = await journey_report(store, KEY, version=1, since=T0 + timedelta(days=1))
    assert [(s.reached, s.waiting) for s in later.steps] == [(0, 0), (0, 0), (0, 0)]


async def test_conversions_count_for_the_last_and_any_message_within_the_window(
    store: Store,
) -> None:
    await publish(store, {**DEFINITION, "attribution": {"window": "2d"},
                          "steps": {"push_reminder": {"send": {"channel": "push",
                                                               "template": "cart-reminder"},
                                                      "next": "email_reminder"},
                                    "email_reminder": DEFINITION["steps"]["email_reminder"]}})
    hour = timedelta(hours=1)

    def push(n: int, at: datetime) -> Delivery:
        row = send(n, "sent", step="push_reminder", channel="push", at=at)
        row.idempotency_key += "/push"
        return row

    await add(
        store,
        # 1: push, then email, converts an hour after the email: last touch email, any both
        entry(1, "converted", minutes=5 * 60), push(1, T0 + hour),
        send(1, "sent", at=T0 + 4 * hour),
        # 2: push only, converts after 3 hours
        entry(2, "converted", minutes=3 * 60), push(2, T0 + hour),
        # 3: push, then converts 3 days later: outside the 2-day window, no touch
        entry(3, "converted", minutes=3 * 24 * 60 + 60), push(3, T0 + hour),
        # 4: got both, never converted; 5: an email skipped, converted: no message to credit
        entry(4, "completed", minutes=600), push(4, T0 + hour), send(4, "sent", at=T0 + 4 * hour),
        entry(5, "converted", minutes=600), send(5, "skipped:consent", at=T0 + hour),
        # 6: converted, the email sent after the conversion does not count
        entry(6, "converted", minutes=60), send(6, "sent", at=T0 + 2 * hour),
    )
    report = await journey_report(store, KEY)
    figures = {m.step: m for m in report.messages}
    push_row, email_row = figures["push_reminder"], figures["email_reminder"]
    assert (push_row.sent, email_row.sent) == (4, 3)
    assert (push_row.conversions.last_touch, push_row.conversions.any_touch) == (1, 2)
    assert (email_row.conversions.last_touch, email_row.conversions.any_touch) == (1, 1)
    assert push_row.conversions.any_touch_rate == 0.5
    assert email_row.conversions.last_touch_rate == pytest.approx(1 / 3)

    await publish(store, {**DEFINITION, "attribution": {"window": "4d"},
                          "steps": {"push_reminder": {"send": {"channel": "push",
                                                               "template": "cart-reminder"},
                                                      "next": "email_reminder"},
                                    "email_reminder": DEFINITION["steps"]["email_reminder"]}})
    wider = {m.step: m.conversions for m in (await journey_report(store, KEY)).messages}
    assert (wider["push_reminder"].last_touch, wider["push_reminder"].any_touch) == (2, 3)


def hold(n: int, reason: str, *, at: datetime = T0 + timedelta(hours=1),
         hours: int = 8) -> SendHold:
    return SendHold(idempotency_key=f"journey/{KEY}/c-{n}/email_reminder/0",
                    workflow_id=f"journey/{KEY}/c-{n}", journey_key=KEY, step="email_reminder",
                    contact_id=f"c-{n}", template="cart-reminder", variant=None,
                    channel="email", reason=reason, held_at=at, until=at + timedelta(hours=hours))


async def test_holds_count_per_message_by_reason_once_per_send(store: Store) -> None:
    await publish(store, DEFINITION)
    await add(store, send(1, "sent"), send(2, "sent"), send(3, "skipped:quiet_hours"))
    await add(
        store,
        hold(1, "quiet_hours"),
        hold(1, "quiet_hours", at=T0 + timedelta(days=1)),  # held twice: one send held
        hold(2, "frequency_cap"), hold(2, "quiet_hours", hours=2),
        hold(4, "quiet_hours"),  # still waiting: held, nowhere else yet
        hold(5, "quiet_hours", at=T0 - timedelta(days=2)),  # before the window
    )
    report = await journey_report(store, KEY, since=T0 - timedelta(hours=1), now=T0)
    [email] = report.messages
    assert email.held == {"quiet_hours": 3, "frequency_cap": 1}
    assert (email.sent, email.skipped["quiet_hours"]) == (2, 1)
    assert report.notes == []
    everything = await journey_report(store, KEY, now=T0)
    assert everything.messages[0].held["quiet_hours"] == 4


async def test_per_link_clicks_and_unique_clickers_from_tracked_redirects(
    store: Store,
) -> None:
    await publish(store, DEFINITION)
    sent = await add(store, *(send(n, "sent") for n in range(1, 5)))
    await add(store, *(DeliveryLink(delivery_id=row.id, position=position,
                                    contact_id=row.contact_id, url=url, label=label)
                       for row in sent for position, (url, label) in enumerate(
                           [("https://shop.example/cart", "Back to your cart"),
                            ("https://shop.example/help", "Help")])))

    def click(n: int, position: int, k: int) -> DeliveryFeedback:
        row = sent[n - 1]
        return DeliveryFeedback(
            dedupe_key=f"tracking/clicked/{row.id}/{position}/{k}", delivery_id=row.id,
            contact_id=row.contact_id, provider="cairn", kind="clicked", channel="email",
            detail={"source": "tracking", "link": "x", "link_index": position},
            occurred_at=T0 + timedelta(hours=3), received_at=T0 + timedelta(hours=3))

    await add(store, click(1, 0, 1), click(1, 0, 2), click(2, 0, 1), click(3, 1, 1),
              feedback(4, sent[3], "clicked"))  # a provider's click: no link named
    report = await journey_report(store, KEY, now=T0)
    [email] = report.messages
    assert email.clicked == 4  # messages clicked (the provider's one too)
    assert [(link.index, link.label, link.url, link.clicks, link.unique_clickers)
            for link in email.links] == [
        (0, "Back to your cart", "https://shop.example/cart", 3, 2),
        (1, "Help", "https://shop.example/help", 1, 1)]
    assert email.links[0].click_rate == pytest.approx(0.5)
