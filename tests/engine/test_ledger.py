"""The exactly-once ledger, as a channel send and an action (a webhook) walk it.

Both go through the same states under their key: claimed as `sending` before the call, then
settled `sent`, `unconfirmed` (then kept, confirmed or sent again, by the delivery policy),
released for a retry (no row left), or `failed`. Each
test drives both through a scripted target and asserts the ledger row it leaves, column by
column, since journeys, the simulator and `cairn outbox` read those rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.actions import UNCONFIRMED as ACTION_UNCONFIRMED
from activities.actions import ActionActivities
from activities.send import UNCONFIRMED_REASON as SEND_UNCONFIRMED
from activities.send import DeliveryActivities
from cairn.channels.base import OutgoingMessage, ProviderError, Receipt
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.webhook import WebhookReply
from cairn.contact import ContactSnapshot
from cairn.contracts import (
    PROVIDER_REJECTED,
    PROVIDER_UNAVAILABLE,
    ActionRequest,
    SendRequest,
    StepContext,
    saved_response,
)
from cairn.delivery_policy import MAX_RESENDS, DeliveryPolicy
from cairn.journey import Send, Webhook
from cairn.store import contacts, deliveries
from cairn.store.db import Store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
env = ActivityEnvironment()


@dataclass
class Target:
    """A provider and a webhook caller in one: answers or fails as the test scripts it."""

    idempotent: bool = False
    failures: list[ProviderError] = field(default_factory=list)
    calls: int = 0
    name: str = "scripted"
    channels: tuple[str, ...] = ("email",)

    def _next(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)

    async def send(self, message: OutgoingMessage) -> Receipt:
        self._next()
        return Receipt(provider=self.name, provider_message_id=f"pm-{self.calls}",
                       response={"accepted": True})

    async def call(self, method: str, url: str, body: str | None, headers: dict[str, str],
                   idempotency_key: str) -> WebhookReply:
        self._next()
        return WebhookReply(status=200, json={"ok": self.calls})

    async def aclose(self) -> None:
        return None


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(db_url)
    snapshot = ContactSnapshot.model_validate({
        "id": "c-1", "timezone": "UTC", "email": "ana@example.com",
        "consent": {"marketing": True}, "attributes": {"first_name": "Ana"},
    })
    async with opened.session() as s, s.begin():
        await contacts.create_contact(s, snapshot, NOW)
    try:
        yield opened
    finally:
        await opened.close()


def _context(now: datetime) -> StepContext:
    return StepContext(workflow_id="journey/j/c-1", journey_key="j", contact_id="c-1",
                       step="act", now=now)


class Sending:
    """A channel send: `deliver_message` through the target as the email provider."""

    kind = "send"
    unconfirmed = SEND_UNCONFIRMED

    def __init__(self, store: Store, target: Target, on_unconfirmed: str = "keep") -> None:
        providers = dict(local_channels(store).providers)
        providers["email"] = target  # type: ignore[assignment]
        policy = DeliveryPolicy.model_validate({"unconfirmed": {"email": on_unconfirmed}})
        self.activities = DeliveryActivities(store, ChannelSet(providers=providers), policy)

    async def run(self, now: datetime = NOW) -> Any:
        send = Send.model_validate({"channel": "email", "template": "hi",
                                    "category": "transactional"})
        request = SendRequest(context=_context(now), send=send, channel="email",
                              template={"email": {"subject": "Hi", "body": "Hello"}})
        return await env.run(self.activities.deliver_message, request)


class Acting:
    """An action: `record_action` of a webhook through the target as the webhook caller."""

    kind = "webhook"
    unconfirmed = ACTION_UNCONFIRMED

    def __init__(self, store: Store, target: Target) -> None:
        channels = ChannelSet(providers={}, webhooks=target)  # type: ignore[arg-type]
        self.activities = ActionActivities(store, channels)

    async def run(self, now: datetime = NOW) -> Any:
        request = ActionRequest(context=_context(now), kind="webhook",
                                webhook=Webhook(url="https://hooks.example/x"))
        return await env.run(self.activities.record_action, request)


USES = [Sending, Acting]


async def _rows(store: Store) -> list[deliveries.Delivery]:
    async with store.session() as s:
        return await deliveries.deliveries_for(s, workflow_id="journey/j/c-1")


def _unknown(idempotent_retry: bool = True) -> ProviderError:
    return ProviderError("scripted", "no answer", retryable=idempotent_retry,
                         outcome_unknown=True)


@pytest.mark.parametrize("use", USES)
async def test_a_call_that_answers_settles_sent_once(store: Store, use: Any) -> None:
    target = Target()
    acting = use(store, target)
    first = await acting.run()
    again = await acting.run(LATER)
    assert first.status == again.status == "sent" and target.calls == 1
    [row] = await _rows(store)
    assert (row.kind, row.status, row.provider, row.sent_at, row.reason) == (
        use.kind, "sent", "scripted", NOW, None)
    if use is Sending:
        assert row.provider_message_id == "pm-1"
        assert row.response == {"to": "ana@example.com", "accepted": True}
    else:
        assert row.provider_message_id is None and row.response == {"ok": 1}


@pytest.mark.parametrize("use", USES)
async def test_a_failure_that_proves_nothing_went_out_releases_the_key(
    store: Store, use: Any,
) -> None:
    target = Target(failures=[ProviderError("scripted", "busy", retryable=True, retry_after=7)])
    acting = use(store, target)
    with pytest.raises(ApplicationError) as raised:
        await acting.run()
    assert raised.value.type == PROVIDER_UNAVAILABLE and not raised.value.non_retryable
    assert raised.value.next_retry_delay == timedelta(seconds=7)
    assert await _rows(store) == []
    assert (await acting.run(LATER)).status == "sent"
    [row] = await _rows(store)
    assert (row.status, row.sent_at, target.calls) == ("sent", LATER, 2)


@pytest.mark.parametrize("use", USES)
async def test_an_unknown_outcome_is_not_repeated_on_a_target_that_cannot_deduplicate(
    store: Store, use: Any,
) -> None:
    target = Target(failures=[_unknown()])
    acting = use(store, target)
    result = await acting.run()
    assert result.status == "unconfirmed" and target.calls == 1
    [row] = await _rows(store)
    assert row.status == "unconfirmed" and row.sent_at == NOW and row.accepted_at is None
    assert row.reason == f"{use.unconfirmed}: scripted: no answer"
    if use is Sending:
        assert row.response == {"to": "ana@example.com", "unconfirmed": True}
    else:
        assert row.response is None


@pytest.mark.parametrize("use", USES)
async def test_a_call_left_sending_is_repeated_only_on_a_deduplicating_target(
    store: Store, use: Any,
) -> None:
    target = Target(idempotent=True, failures=[_unknown()])
    acting = use(store, target)
    with pytest.raises(ApplicationError) as raised:
        await acting.run()
    assert raised.value.type == PROVIDER_UNAVAILABLE
    [pending] = await _rows(store)
    assert pending.status == "sending"
    assert (await acting.run(LATER)).status == "sent" and target.calls == 2
    [row] = await _rows(store)
    assert (row.status, row.sent_at, row.reason) == ("sent", LATER, None)


@pytest.mark.parametrize("use", USES)
async def test_a_call_left_sending_is_answered_unconfirmed_on_any_other_target(
    store: Store, use: Any,
) -> None:
    target = Target(idempotent=True, failures=[_unknown()])
    acting = use(store, target)
    with pytest.raises(ApplicationError):
        await acting.run()
    target.idempotent = False  # the worker that retries has a target that cannot de-duplicate
    assert (await acting.run(LATER)).status == "unconfirmed" and target.calls == 1
    [row] = await _rows(store)
    assert row.status == "unconfirmed" and row.reason == use.unconfirmed
    if use is Sending:
        assert row.sent_at == LATER
        assert row.response == {"to": "ana@example.com", "unconfirmed": True}
    else:
        assert row.sent_at is None and row.response is None


@pytest.mark.parametrize("use", USES)
async def test_a_refusal_settles_failed_and_is_not_retried(store: Store, use: Any) -> None:
    target = Target(failures=[ProviderError("scripted", "HTTP 422: bad", retryable=False,
                                            status=422, code="bad")])
    acting = use(store, target)
    with pytest.raises(ApplicationError) as raised:
        await acting.run()
    assert raised.value.type == PROVIDER_REJECTED and raised.value.non_retryable
    [row] = await _rows(store)
    assert (row.status, row.reason, row.sent_at) == ("failed", "scripted: HTTP 422: bad", None)
    if use is Sending:
        assert row.response == {"to": "ana@example.com", "status": 422, "code": "bad"}
    else:
        assert row.response is None


async def test_an_unconfirmed_send_is_sent_again_under_resend_until_the_limit(
    store: Store,
) -> None:
    target = Target(failures=[_unknown()])
    sending = Sending(store, target, on_unconfirmed="resend")
    with pytest.raises(ApplicationError) as raised:
        await sending.run()
    assert raised.value.type == PROVIDER_UNAVAILABLE and not raised.value.non_retryable
    [pending] = await _rows(store)
    assert pending.status == "unconfirmed"
    outcome = await sending.run(LATER)
    assert outcome.status == "sent" and target.calls == 2
    [row] = await _rows(store)
    assert row.status == "sent" and row.provider_message_id == "pm-2"
    assert row.reason is not None and "sent again" in row.reason
    assert row.response is not None and row.response["resends"] == 1
    assert row.planned_at == NOW and row.accepted_at is not None


async def test_resend_stops_at_the_limit_and_keeps_the_send_unconfirmed(store: Store) -> None:
    target = Target(failures=[_unknown() for _ in range(MAX_RESENDS + 1)])
    sending = Sending(store, target, on_unconfirmed="resend")
    for _ in range(MAX_RESENDS):
        with pytest.raises(ApplicationError):
            await sending.run()
    outcome = await sending.run()
    assert outcome.status == "unconfirmed" and target.calls == MAX_RESENDS + 1
    again = await sending.run(LATER)
    assert again.status == "unconfirmed" and target.calls == MAX_RESENDS + 1
    [row] = await _rows(store)
    assert row.status == "unconfirmed" and row.response["resends"] == MAX_RESENDS


async def test_a_webhook_answer_stays_in_its_row_and_the_run_gets_a_reference(
    store: Store,
) -> None:
    """`save_as`: the answer is the row's `response`; the activity answers a reference, and a
    later send's template (one that names no event) reads the answer back through it."""
    acting = Acting(store, Target())
    result = await acting.run()
    [row] = await _rows(store)
    assert row.response == {"ok": 1}
    assert result.response == saved_response(row.id, "sent")
    assert "ok" not in json.dumps(result.model_dump(mode="json"))
    activities = DeliveryActivities(store, local_channels(store))
    send = Send.model_validate({"channel": "email", "template": "hi",
                                "category": "transactional"})
    request = SendRequest(
        context=StepContext(workflow_id="journey/j/c-1", journey_key="j", contact_id="c-1",
                            step="tell", now=LATER),
        send=send, channel="email",
        template={"email": {"subject": "Hi", "body": "answer {{ journey.crm.ok }}"}},
        journey_context={"crm": result.response, "old": {"kept": "as is"}})
    await env.run(activities.deliver_message, request)
    async with store.session() as s:
        [mail] = await deliveries.deliveries_for(s, workflow_id="journey/j/c-1", kind="send")
    assert mail.rendered["body"] == "answer 1"


@pytest.mark.parametrize("fails", [False, True])
async def test_a_last_send_closes_its_entry_with_the_row_that_settles_it_sent(
    store: Store, fails: bool,
) -> None:
    """`closes_entry` (the run ends after this send): the entry closes `completed` in the
    transaction that settles the send `sent` with a provider that answers over the network; a
    refused send closes nothing (the run's `finish_entry` does)."""
    from cairn.store import entries as entries_repo

    async with store.session() as s, s.begin():
        await entries_repo.record_entry(
            s, journey_key="j", version=1, contact_id="c-1", entry_key=None,
            workflow_id="journey/j/c-1", trigger_message_id="m-1", entered_at=NOW)
    target = Target(failures=[ProviderError("scripted", "HTTP 422: bad", retryable=False,
                                            status=422, code="bad")] if fails else [])
    sending = Sending(store, target)
    send = Send.model_validate({"channel": "email", "template": "hi",
                                "category": "transactional"})
    request = SendRequest(context=_context(NOW), send=send, channel="email", closes_entry=True,
                          template={"email": {"subject": "Hi", "body": "Hello"}})
    if fails:
        with pytest.raises(ApplicationError):
            await env.run(sending.activities.deliver_message, request)
    else:
        outcome = await env.run(sending.activities.deliver_message, request)
        assert (outcome.status, outcome.entry_closed) == ("sent", True)
    async with store.session() as s:
        (entry,) = await entries_repo.entries_for(s, "j")
    assert (entry.outcome, entry.ended_at) == ((None, None) if fails else ("completed", NOW))
