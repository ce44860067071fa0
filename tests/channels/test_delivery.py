"""Delivery through real providers: exactly once, retries, fallbacks, caps, consent, feedback.

The provider here is Postmark's HTTP API served by the local stand-in (tests/standins/postmark.py),
reached by the real `PostmarkProvider`; the store is real SQLite (and PostgreSQL in CI). What is
asserted is what the provider accepted and what the ledger and the contact hold afterwards.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.send import UNCONFIRMED_REASON, DeliveryActivities
from cairn.channels.base import OutgoingMessage
from cairn.channels.local import OutboxProvider
from cairn.channels.postmark import PostmarkProvider, PostmarkSettings
from cairn.channels.registry import ChannelSet, local_channels
from cairn.contact import ContactSnapshot
from cairn.contracts import (
    PROVIDER_REJECTED,
    PROVIDER_UNAVAILABLE,
    SendRequest,
    StepContext,
    UnconfirmedSweep,
)
from cairn.delivery_policy import DeliveryPolicy, FrequencyCap, cap_hold
from cairn.journey import CHANNELS, Send
from cairn.store import contacts, deliveries
from cairn.store.db import Store
from tests.standins.postmark import TOKEN, postmark_app
from tests.standins.server import Script, StandInServer

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEMPLATE = {
    "email": {"subject": "Hello {{ contact.first_name }}",
              "body": "Offer inside. Unsubscribe: {{ unsubscribe_url }}"},
    "sms": {"body": "Offer for {{ contact.first_name }}"},
    "in_app": {"title": "Offer", "body": "Hi {{ contact.first_name }}"},
}
EVERY_CHANNEL = {**TEMPLATE, **{channel: {"body": "Offer"} for channel in
                                ("whatsapp", "push", "web_push", "on_site")}}
env = ActivityEnvironment()


@pytest.fixture(scope="module")
def postmark() -> Iterator[tuple[Script, str]]:
    script = Script()
    with StandInServer(postmark_app(script, inactive=["dead@example.com"])) as server:
        yield script, server.url


async def add_contact(store: Store, contact_id: str, **changes: Any) -> None:
    data: dict[str, Any] = {
        "id": contact_id, "timezone": "UTC", "email": f"{contact_id}@example.com",
        "phone": "+40722000000", "consent": {"marketing": True},
        "attributes": {"first_name": "Ana"},
    }
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot.model_validate({**data, **changes}), NOW)


def request(contact_id: str, *, channels: list[str] | None = None, step: str = "offer",
            iteration: int = 1, category: str = "marketing", now: datetime = NOW,
            topic: str | None = None, when_held: str = "wait") -> SendRequest:
    send = Send.model_validate({"channels": channels or ["email"], "template": "offer",
                                "category": category, **({"topic": topic} if topic else {})})
    return SendRequest(
        context=StepContext(workflow_id=f"journey/offers/{contact_id}", journey_key="offers",
                            contact_id=contact_id, step=step, iteration=iteration, now=now),
        send=send, template=TEMPLATE, when_held=when_held,  # type: ignore[arg-type]
    )


def postmark_channels(store: Store, url: str, timeout: float = 5.0) -> ChannelSet:
    providers = dict(local_channels(store).providers)
    providers["email"] = PostmarkProvider(PostmarkSettings(
        server_token=SecretStr(TOKEN), from_address="shop@example.com", base_url=url,
        timeout=timeout,
    ))
    return ChannelSet(providers=providers)


async def ledger(store: Store, contact_id: str) -> list[deliveries.Delivery]:
    async with store.session() as s:
        return await deliveries.deliveries_for(s, contact_id=contact_id, kind="send")


def accepted_for(script: Script, contact_id: str) -> list[dict[str, Any]]:
    return [m for m in script.accepted if m["To"] == f"{contact_id}@example.com"]


async def plan_and_send(activities: DeliveryActivities, req: SendRequest) -> Any:
    plan = await env.run(activities.prepare_send, req)
    assert plan.status == "ready", plan
    ready = req.model_copy(update={"channel": plan.channel})
    return await env.run(activities.deliver_message, ready)


# --------------------------------------------------------------------------- exactly once


async def test_a_send_reaches_postmark_once_with_unsubscribe_headers(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    script, url = postmark
    await add_contact(sqlite_store, "eo-1")
    activities = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url))
    req = request("eo-1")
    first = await plan_and_send(activities, req)
    again = await env.run(activities.deliver_message, req.model_copy(update={"channel": "email"}))
    assert first.status == "sent" and again == first
    [message] = accepted_for(script, "eo-1")
    assert message["Subject"] == "Hello Ana"
    assert message["MessageStream"] == "broadcast"  # marketing goes on the broadcast stream
    headers = {h["Name"]: h["Value"] for h in message["Headers"]}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = headers["List-Unsubscribe"].strip("<>")
    assert link in message["TextBody"]  # the same signed link is in the body
    [row] = await ledger(sqlite_store, "eo-1")
    assert (row.status, row.provider, row.provider_message_id) == (
        "sent", "postmark", message["MessageID"])


async def test_provider_accepted_but_answered_too_late_is_not_sent_again(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    """The exactly-once proof: the provider took the message, the activity timed out waiting
    for the answer, and the retry does not send a second copy."""
    script, url = postmark
    await add_contact(sqlite_store, "eo-2")
    activities = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url, timeout=0.3))
    script.slow(1.5, accept=True)
    req = request("eo-2").model_copy(update={"channel": "email"})
    outcome = await env.run(activities.deliver_message, req)
    retried = await env.run(activities.deliver_message, req)
    await asyncio.sleep(1.3)  # let the stand-in finish its late answer
    assert len(accepted_for(script, "eo-2")) == 1
    assert outcome.status == retried.status == "sent"
    [row] = await ledger(sqlite_store, "eo-2")
    # Postmark's message search found it: confirmed, with Postmark's id and time
    assert row.reason is not None and row.reason.startswith("confirmed by the provider")
    assert UNCONFIRMED_REASON in row.reason
    [accepted] = accepted_for(script, "eo-2")
    assert row.provider_message_id == accepted["MessageID"]
    assert row.accepted_at is not None and row.response is not None
    assert row.response["confirmed"] is True


async def test_lost_answer_postmark_never_accepted_stays_unconfirmed_or_is_resent(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    """Postmark's message search finds nothing: a marketing send (`keep`) stays unconfirmed, a
    transactional one (`resend`) goes again on the retry and reaches Postmark once."""
    script, url = postmark
    await add_contact(sqlite_store, "eo-9")
    activities = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url, timeout=0.3))
    script.slow(0.8, accept=False)
    kept = request("eo-9").model_copy(update={"channel": "email"})
    assert (await env.run(activities.deliver_message, kept)).status == "unconfirmed"
    script.slow(0.8, accept=False)
    resent = request("eo-9", step="receipt", category="transactional").model_copy(
        update={"channel": "email"})
    with pytest.raises(ApplicationError):
        await env.run(activities.deliver_message, resent)
    await asyncio.sleep(0.6)
    assert (await env.run(activities.deliver_message, resent)).status == "sent"
    assert len(accepted_for(script, "eo-9")) == 1
    first, second = await ledger(sqlite_store, "eo-9")
    assert (first.status, first.accepted_at) == ("unconfirmed", None)
    assert second.status == "sent" and second.response is not None
    assert second.response["resends"] == 1


async def test_worker_killed_after_the_provider_accepted_sends_once(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    """The worker dies while the provider has the message and no answer came back yet: the
    ledger row stays `sending`; the retry (another worker) must not send it again."""
    script, url = postmark
    await add_contact(sqlite_store, "eo-3")
    activities = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url))
    script.slow(5.0, accept=True)
    req = request("eo-3").model_copy(update={"channel": "email"})
    attempt = asyncio.create_task(env.run(activities.deliver_message, req))
    for _ in range(200):
        if accepted_for(script, "eo-3"):
            break
        await asyncio.sleep(0.02)
    attempt.cancel()  # the worker process is gone
    with pytest.raises(asyncio.CancelledError):
        await attempt
    [pending] = await ledger(sqlite_store, "eo-3")
    assert pending.status == "sending"
    retry = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url))
    outcome = await env.run(retry.deliver_message, req)
    assert outcome.status == "sent"
    assert len(accepted_for(script, "eo-3")) == 1


async def test_retryable_failures_leave_nothing_and_carry_retry_after(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    script, url = postmark
    await add_contact(sqlite_store, "eo-4")
    activities = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url))
    req = request("eo-4").model_copy(update={"channel": "email"})
    script.fail(429, retry_after="7")
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.deliver_message, req)
    assert raised.value.type == PROVIDER_UNAVAILABLE and not raised.value.non_retryable
    assert raised.value.next_retry_delay == timedelta(seconds=7)
    assert await ledger(sqlite_store, "eo-4") == []  # nothing went out: the retry starts afresh
    script.fail(503)
    with pytest.raises(ApplicationError):
        await env.run(activities.deliver_message, req)
    outcome = await env.run(activities.deliver_message, req)
    assert outcome.status == "sent" and len(accepted_for(script, "eo-4")) == 1


async def test_inactive_recipient_is_rejected_for_good_and_suppressed(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    _, url = postmark
    await add_contact(sqlite_store, "dead", email="dead@example.com")
    activities = DeliveryActivities(sqlite_store, postmark_channels(sqlite_store, url))
    req = request("dead", channels=["email", "sms"]).model_copy(update={"channel": "email"})
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.deliver_message, req)
    assert raised.value.type == PROVIDER_REJECTED and raised.value.non_retryable
    [row] = await ledger(sqlite_store, "dead")
    assert row.status == "failed" and "406" in (row.reason or "")
    async with sqlite_store.session() as s:
        snapshot = await contacts.snapshot(s, "dead")
    assert snapshot is not None and snapshot.suppressed == ["email"]
    # The step's fallback asks again without email: SMS is chosen, under its own ledger key.
    fallback = req.model_copy(update={"exclude": ["email"], "attempt": 1, "channel": None})
    plan = await env.run(activities.prepare_send, fallback)
    assert (plan.status, plan.channel) == ("ready", "sms")
    sent = await env.run(activities.deliver_message,
                         fallback.model_copy(update={"channel": "sms"}))
    assert sent.status == "sent" and sent.channel == "sms"
    keys = [r.idempotency_key for r in await ledger(sqlite_store, "dead")]
    assert keys == ["journey/offers/dead/offer/1", "journey/offers/dead/offer/1/fallback-1"]


# --------------------------------------------------------------------------- caps and holds


def test_cap_hold_waits_for_the_oldest_send_to_leave_the_window() -> None:
    cap = FrequencyCap(max=3, per="7d")
    sends = [NOW - timedelta(days=6), NOW - timedelta(days=3), NOW - timedelta(days=1)]
    assert cap_hold(cap, "email", sends[:2], NOW) is None
    assert cap_hold(cap, "email", sends, NOW) == sends[0] + timedelta(days=7)
    assert cap_hold(FrequencyCap(max=1, per="1d", channel="sms"), "email", sends, NOW) is None


async def test_a_fourth_marketing_message_in_a_week_waits_or_skips(sqlite_store: Store) -> None:
    await add_contact(sqlite_store, "capped")
    policy = DeliveryPolicy(caps=[FrequencyCap(max=3, per="7d")])
    activities = DeliveryActivities(sqlite_store, policy=policy)
    for day in range(3):
        await plan_and_send(activities, request("capped", step=f"s{day}",
                                                now=NOW + timedelta(days=day)))
    fourth = request("capped", step="s3", now=NOW + timedelta(days=3))
    plan = await env.run(activities.prepare_send, fourth)
    assert plan.status == "deferred:frequency_cap"
    assert plan.hold_until == NOW + timedelta(days=7)
    assert "at most 3 marketing per 7d" in plan.reason
    skipped = await env.run(activities.prepare_send,
                            request("capped", step="s4", now=NOW + timedelta(days=3),
                                    when_held="skip"))
    assert skipped.status == "skipped:frequency_cap"
    receipt = await env.run(activities.prepare_send,
                            request("capped", step="s5", now=NOW + timedelta(days=3),
                                    category="transactional"))
    assert receipt.status == "ready"  # transactional messages are never capped


async def test_channel_quiet_hours_from_the_policy_hold_marketing_sms(sqlite_store: Store) -> None:
    await add_contact(sqlite_store, "night", timezone="Europe/Bucharest")
    policy = DeliveryPolicy.model_validate({"quiet_hours": {"sms": {"from": "21:00",
                                                                    "to": "09:00"}}})
    activities = DeliveryActivities(sqlite_store, policy=policy)
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Bucharest
    plan = await env.run(activities.prepare_send, request("night", channels=["sms"], now=late))
    assert plan.status == "deferred:quiet_hours"
    assert plan.hold_until == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 09:00 local
    email = await env.run(activities.prepare_send,
                          request("night", channels=["email"], step="e", now=late))
    assert email.status == "ready"  # the policy holds SMS only


async def test_topic_unsubscribe_blocks_only_that_topic(sqlite_store: Store) -> None:
    await add_contact(sqlite_store, "topics", consent={"marketing": True,
                                                       "topics": {"newsletter": False}})
    activities = DeliveryActivities(sqlite_store)
    plan = await env.run(activities.prepare_send, request("topics", topic="newsletter"))
    assert plan.status == "skipped:consent" and "topic newsletter" in plan.reason
    other = await env.run(activities.prepare_send, request("topics", step="o", topic="offers"))
    assert other.status == "ready"


async def test_in_app_messages_land_in_the_inbox_once(sqlite_store: Store) -> None:
    await add_contact(sqlite_store, "inbox-1")
    activities = DeliveryActivities(sqlite_store)
    req = request("inbox-1", channels=["in_app"])
    first = await plan_and_send(activities, req)
    await env.run(activities.deliver_message, req.model_copy(update={"channel": "in_app"}))
    from cairn.store import inbox

    async with sqlite_store.session() as s:
        [message] = await inbox.inbox_of(s, "inbox-1")
    assert message.parts == {"title": "Offer", "body": "Hi Ana"}
    assert first.status == "sent"


# --------------------------------------------------------------------------- consent property


MIGRATED: dict[str, Path] = {}
COUNTER: list[int] = []


def _migrated_db() -> Path:
    if "path" not in MIGRATED:
        folder = Path(tempfile.mkdtemp(prefix="cairn-consent-"))
        MIGRATED["path"] = folder / "consent.db"

        async def migrate() -> None:
            opened = await Store.open(f"sqlite+aiosqlite:///{MIGRATED['path']}")
            await opened.close()

        asyncio.run(migrate())
    return MIGRATED["path"]


consent_values = st.one_of(st.none(), st.booleans(),
                           st.fixed_dictionaries({}, optional={"marketing": st.booleans(),
                                                               "transactional": st.booleans()}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    general=st.one_of(st.none(), st.booleans()),
    per_channel=st.dictionaries(st.sampled_from(CHANNELS), consent_values, max_size=4),
    candidates=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=4, unique=True),
    category=st.sampled_from(["marketing", "transactional"]),
    suppressed=st.lists(st.sampled_from(CHANNELS), max_size=2, unique=True),
)
def test_no_marketing_message_is_ever_delivered_without_consent_on_its_channel(
    general: bool | None, per_channel: dict[str, Any], candidates: list[str], category: str,
    suppressed: list[str],
) -> None:
    consent: dict[str, Any] = {k: v for k, v in per_channel.items() if v is not None}
    if general is not None:
        consent["marketing"] = general

    database = _migrated_db()
    COUNTER.append(1)
    contact_id = f"p-{len(COUNTER)}"

    async def check() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{database}")
        try:
            await add_contact(store, contact_id, consent=consent, suppressed=suppressed,
                              push_tokens=["tok"],
                              web_push=[{"endpoint": "https://push.example/x",
                                         "keys": {"p256dh": "k", "auth": "a"}}])
            activities = DeliveryActivities(store)
            req = request(contact_id, channels=candidates, category=category)
            req = req.model_copy(update={"template": EVERY_CHANNEL})
            plan = await env.run(activities.prepare_send, req)
            if plan.status == "ready":
                await env.run(activities.deliver_message,
                              req.model_copy(update={"channel": plan.channel}))
            for row in await ledger(store, contact_id):
                if row.status != "sent":
                    continue
                assert row.channel is not None and row.channel not in suppressed
                own = consent.get(row.channel)
                if category == "marketing":
                    if isinstance(own, dict) and "marketing" in own:
                        allowed = own["marketing"] is True
                    elif isinstance(own, bool):
                        allowed = own
                    else:
                        allowed = consent.get("marketing") is True
                    assert allowed, (row.channel, consent)
        finally:
            await store.close()

    asyncio.run(check())


def test_outbox_provider_is_idempotent_and_local() -> None:
    outbox = OutboxProvider(CHANNELS)
    assert outbox.idempotent and outbox.name == "outbox"


async def test_the_sweep_settles_unconfirmed_sends_postmark_lists_later(
    sqlite_store: Store, postmark: tuple[Script, str],
) -> None:
    """Postmark took one message whose answer was lost, and never saw the other: the upkeep
    lookup settles the first `sent` with Postmark's id and leaves the second unconfirmed."""
    script, url = postmark
    await add_contact(sqlite_store, "eo-10")
    channels = postmark_channels(sqlite_store, url)
    activities = DeliveryActivities(sqlite_store, channels)
    for key in ("journey/offers/eo-10/took", "journey/offers/eo-10/lost"):
        async with sqlite_store.session() as s, s.begin():
            await deliveries.record_delivery(
                s, idempotency_key=key, kind="send", workflow_id="journey/offers/eo-10",
                journey_key="offers", step="offer", contact_id="eo-10", channel="email",
                provider="postmark", template="offer", category="marketing",
                status="unconfirmed", reason="outcome unknown", rendered={
                    "subject": "Hello", "body": "Offer"},
                response={"to": "eo-10@example.com", "unconfirmed": True},
                created_at=NOW, planned_at=NOW, sent_at=NOW)
    took = OutgoingMessage(channel="email", to="eo-10@example.com",
                           parts={"subject": "Hello", "body": "Offer"}, category="marketing",
                           idempotency_key="journey/offers/eo-10/took", contact_id="eo-10")
    await channels.provider("email").send(took)  # accepted; its answer "lost"

    settled = await env.run(activities.settle_unconfirmed, UnconfirmedSweep())

    assert settled == 1
    took_row, lost_row = await ledger(sqlite_store, "eo-10")
    [accepted] = accepted_for(script, "eo-10")
    assert (took_row.status, took_row.provider_message_id) == ("sent", accepted["MessageID"])
    assert took_row.accepted_at is not None
    assert (lost_row.status, lost_row.accepted_at) == ("unconfirmed", None)
