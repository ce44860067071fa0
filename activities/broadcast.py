"""Broadcast entry: a batch of contacts enters one journey together, and is sent to together.

Used by the activity that enters a schedule's batch (`activities.sweeps.enter_scheduled`). The
entry rules and the starting of runs are the core's (`cairn.events.bulk_entry`); what is here is
the part that acts: for a journey whose path is `[send ->] end` (`inline_path`), contacts get no
run of their own. The batch checks each contact as `prepare_send` would (reachability, consent,
quiet hours, frequency caps), renders the template and claims the ledger rows `sending` in one
transaction (with the entries), calls the provider for each side by side, then settles the rows
`sent` and closes the entries in a second one. So a 1,000-contact batch writes twice, where runs
of their own would write about five times each.

Who acted. The ledger row and the entry of such a contact carry the workflow id of the run that
entered the batch (the broadcast: `cairn outbox` and `GET /v1/outbox` show it); the ledger key is
`<broadcast id>/<contact>/<step>/1`, so a batch redone after a crash finds its rows and sends
nothing twice (a `sending` row left by a crash goes through `deliver_message`, which settles it as
the delivery policy says, exactly as for a run).

Contacts that do have a future get their own run at once, with their entry handed to it: a send
held by quiet hours or a frequency cap (the run waits the hold out on a durable timer), and a
channel refused for good when `channels:` names another to fall back to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.exceptions import ApplicationError

from activities.context import contact_snapshot, step_log, template_scope
from activities.ledger import SENT, Ledger
from activities.send import (
    DeliveryActivities,
    _pending_response,
    address_of,
    skip_status,
)
from cairn.channels.base import OutgoingMessage, ProviderError
from cairn.contracts import SendRequest, StepContext
from cairn.events.bulk_entry import (
    InlinePath,
    close_entries,
    inline_path,
    move_entries,
    plan_entries,
    record_entries,
    route_one_by_one,
    start_runs,
)
from cairn.events.router import RouteDecision, Router
from cairn.journey import Journey
from cairn.journey_run import EventMessage, event_matches, workflow_id
from cairn.log import get_logger
from cairn.reachability import blocker
from cairn.store.db import Store
from cairn.store.schema import Delivery
from cairn.templates import TemplateRenderError, render
from cairn.unsubscribe import UnsubscribeScope, list_unsubscribe_headers, unsubscribe_url

log = get_logger(__name__)

WithEntries = Callable[[AsyncSession], Awaitable[None]]

SEND_CONCURRENCY = 32
"""Provider calls in flight at once for one batch."""


@dataclass
class BatchEntered:
    """What entering a batch did: one decision per contact, and the sends by status."""

    decisions: list[RouteDecision] = field(default_factory=list)
    sends: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.sends[status] = self.sends.get(status, 0) + 1


@dataclass
class _Claimed:
    event: EventMessage
    request: SendRequest
    message: OutgoingMessage
    row_id: int


class BroadcastEntry:
    """Enter trigger events of one journey together; act for contacts without a future."""

    def __init__(self, store: Store, router: Router,
                 delivery: DeliveryActivities | None = None) -> None:
        self.store = store
        self.router = router
        self.delivery = delivery or DeliveryActivities(store)

    async def enter(self, journey: Journey, events: list[EventMessage], *,
                    acting: str, with_entries: WithEntries | None = None) -> BatchEntered:
        """Enter `events` (one per contact, each admitted by the journey's trigger); `acting`
        is the workflow id of the run entering the batch, which acts for inline contacts.

        `with_entries` runs in the transaction that records the entries (the caller marks the
        events routed there: from then on the entries say what happens to each contact, and
        a redone batch reads them, so no relay needs to route the events again)."""
        plan = await plan_entries(self.store, journey, events, acting=acting)
        done = BatchEntered(decisions=list(plan.refused))
        inline = inline_path(journey)
        if inline is None:
            async with self.store.session() as s, s.begin():
                await record_entries(s, journey, plan.new,
                                     lambda e: workflow_id(journey.key, e.contact_id))
                if with_entries is not None:
                    await with_entries(s)
            done.decisions += await start_runs(self.router, journey, plan.new)
        else:
            await self._act(journey, inline, plan.new, [e for e, _ in plan.resumed], acting,
                            done, with_entries)
        done.decisions += await route_one_by_one(self.router, plan.by_router)
        return done

    # ------------------------------------------------------------------ inline contacts

    async def _act(self, journey: Journey, inline: InlinePath, new: list[EventMessage],
                   resumed: list[EventMessage], acting: str, done: BatchEntered,
                   with_entries: WithEntries | None) -> None:
        now = datetime.now(UTC)
        everyone = [*new, *resumed]
        if inline.send is None:  # the journey ends at once: entering is all there is
            async with self.store.session() as s, s.begin():
                await record_entries(s, journey, new, lambda e: acting)
                if with_entries is not None:
                    await with_entries(s)
                await close_entries(s, acting, [e.contact_id for e in everyone],
                                    inline.outcome, now)
            done.decisions += [self._acted(journey, acting) for _ in everyone]
            return
        requests = {e.contact_id: self._request(journey, inline, e, acting, now)
                    for e in everyone}
        claimed: list[_Claimed] = []
        earlier: list[tuple[SendRequest, Delivery]] = []
        own_run: list[EventMessage] = []
        async with self.store.session() as s, s.begin():
            recorded = await _rows_by_key(s, [r.ledger_key for r in requests.values()])
            for event in everyone:
                request = requests[event.contact_id]
                row = recorded.get(request.ledger_key)
                if row is not None:
                    if row.status == "sending" or row.status == "unconfirmed":
                        earlier.append((request, row))
                    else:
                        done.count(row.status)
                    continue
                found = await self._check_and_claim(s, request, event, done)
                if isinstance(found, _Claimed):
                    claimed.append(found)
                elif found == "own run":
                    own_run.append(event)
            held = {e.contact_id for e in own_run}
            await record_entries(s, journey, new,
                                 lambda e: (workflow_id(journey.key, e.contact_id)
                                            if e.contact_id in held else acting))
            fresh = {e.contact_id for e in new}
            await move_entries(s, acting, [e.contact_id for e in own_run
                                           if e.contact_id not in fresh], journey)
            if with_entries is not None:
                await with_entries(s)
        fallbacks, retrying, retry = await self._call(claimed, done)
        for request, row in earlier:  # a crash left these: settle them as a run's retry would
            outcome = await self.delivery.deliver_message(
                request.model_copy(update={"channel": row.channel}))
            done.count(outcome.status)
        async with self.store.session() as s, s.begin():
            if fallbacks:
                await move_entries(s, acting, [e.contact_id for e in fallbacks], journey)
            own = held | {e.contact_id for e in fallbacks}
            finished = [e.contact_id for e in everyone
                        if e.contact_id not in own and e.contact_id not in retrying]
            await close_entries(s, acting, finished, inline.outcome, now)
        own_run += fallbacks
        done.decisions += [self._acted(journey, acting)
                           for e in everyone if e.contact_id not in own]
        done.decisions += await start_runs(self.router, journey, own_run)
        if retry is not None:
            raise retry

    def _acted(self, journey: Journey, acting: str) -> RouteDecision:
        return RouteDecision(journey.key, journey.version, acting, "started",
                             "entered with its batch; no later step, so the batch acted for it")

    def _request(self, journey: Journey, inline: InlinePath, event: EventMessage, acting: str,
                 now: datetime) -> SendRequest:
        assert inline.send is not None and inline.send_step is not None
        spec = inline.send.send
        context = StepContext(workflow_id=acting, journey_key=journey.key,
                              journey_version=journey.version, contact_id=event.contact_id,
                              step=inline.send_step, iteration=1, now=now,
                              entry_id=event.contact_id)
        return SendRequest(
            context=context, send=spec, template=journey.templates.get(spec.template, {}),
            trigger=event.reference(event_matches(journey, event)), journey_context={},
            quiet_hours=journey.settings.quiet_hours, default_timezone=journey.settings.timezone,
            when_held=spec.when_held or journey.settings.when_held or "wait",
        )

    async def _check_and_claim(self, s: Any, request: SendRequest, event: EventMessage,
                               done: BatchEntered) -> _Claimed | str | None:
        """`prepare_send`'s checks and `deliver_message`'s claim for one contact, in the
        batch's transaction: the claimed message, "own run" (held, or not in the store), or
        None (a skip or a template error, recorded)."""
        delivery, context = self.delivery, request.context
        try:
            contact = await contact_snapshot(s, context.contact_id)
        except ApplicationError:
            return "own run"  # erased meanwhile: its run fails the entry as any run would
        blockers = []
        chosen: str | None = None
        for candidate in request.candidates():
            found = blocker(contact, candidate, request.send.category, topic=request.send.topic,
                            disabled=delivery.channels.disabled)
            if found is None:
                chosen = candidate
                break
            blockers.append((candidate, found))
        fields = delivery._ledger_fields(request, context.now)
        if chosen is None:
            status, shown = skip_status(blockers)
            await Ledger.record(s, **fields, channel=shown, status=status,
                                reason="; ".join(b.reason for _, b in blockers), rendered={})
            done.count(status)
            return None
        hold = delivery._quiet_until(request, contact, chosen)
        if hold is None and request.send.category == "marketing":
            hold = await delivery._cap_until(s, request, chosen)
        if hold is not None:
            status, _, reason = hold
            if request.when_held != "skip":
                done.count(status)
                return "own run"
            skipped = ("skipped:quiet_hours" if status == "deferred:quiet_hours"
                       else "skipped:frequency_cap")
            await Ledger.record(s, **fields, channel=chosen, status=skipped, reason=reason,
                                rendered={})
            done.count(skipped)
            return None
        provider = delivery.channels.provider(chosen)
        link = unsubscribe_url(delivery.public_url,
                               UnsubscribeScope(contact.id, chosen, request.send.topic),
                               delivery.signing_key)
        scope = await template_scope(s, contact, request.trigger, request.journey_context)
        scope["unsubscribe_url"] = link
        try:
            parts = render(request.send.template, request.template, chosen, scope)
        except TemplateRenderError as error:
            await Ledger.record(s, **fields, channel=chosen, status="failed", reason=str(error),
                                rendered={})
            step_log(context).warning("delivery.template_error", error=str(error))
            done.count("failed")
            return None
        to = address_of(contact, chosen) or contact.id
        headers = (list_unsubscribe_headers(link)
                   if chosen == "email" and request.send.category == "marketing" else {})
        row = await Ledger.claim(s, **fields, channel=chosen, provider=provider.name,
                                 reason=None, rendered=parts,
                                 response=_pending_response(contact, chosen, to, headers))
        claimed = request.model_copy(update={"channel": chosen})
        message = delivery._message(claimed, chosen, to, parts, headers, row)
        return _Claimed(event, claimed, message, row.id)

    async def _call(self, claimed: list[_Claimed], done: BatchEntered,
                    ) -> tuple[list[EventMessage], set[str], ApplicationError | None]:
        """Call the providers side by side and settle the sent rows in one transaction.

        Returns the contacts that fall back to another channel in a run of their own, those a
        retry of the batch sends again (their entries stay open), and the error to raise once
        everything else is settled when a provider asked for a retry."""
        gate = asyncio.Semaphore(SEND_CONCURRENCY)
        delivery = self.delivery

        async def call(item: _Claimed) -> tuple[_Claimed, Any]:
            provider = delivery.channels.provider(item.message.channel)
            async with gate:
                try:
                    return item, await provider.send(item.message)
                except ProviderError as error:
                    return item, error

        results = await asyncio.gather(*(call(c) for c in claimed))
        sent = [(item, receipt) for item, receipt in results
                if not isinstance(receipt, ProviderError)]
        if sent:
            async with self.store.session() as s, s.begin():
                rows = {row.id: row for row in await s.scalars(select(Delivery).where(
                    Delivery.id.in_([item.row_id for item, _ in sent])))}
                accepted = datetime.now(UTC)
                for item, receipt in sent:
                    row = rows[item.row_id]
                    row.status = SENT
                    row.provider = receipt.provider or row.provider
                    row.provider_message_id = receipt.provider_message_id
                    row.response = {**(row.response or {}), **(receipt.response or {})}
                    row.sent_at = item.request.context.now
                    row.accepted_at = receipt.accepted_at or accepted
                    done.count(SENT)
        fallbacks: list[EventMessage] = []
        retry: ApplicationError | None = None
        retrying: set[str] = set()
        for item, error in results:
            if not isinstance(error, ProviderError):
                continue
            request, channel = item.request, item.message.channel
            provider = delivery.channels.provider(channel)
            resend = delivery.policy.on_unconfirmed(channel, request.send.category) == "resend"
            try:
                row = await delivery.ledger.failed(
                    item.row_id, error, idempotent=provider.idempotent,
                    now=request.context.now, log=step_log(request.context), resend=resend,
                    refused=delivery._refused(item.message, request.context.now))
                done.count(row.status)
            except ApplicationError as raised:
                if raised.non_retryable:
                    done.count("failed")
                    if [c for c in request.candidates() if c != channel]:
                        fallbacks.append(item.event)
                else:
                    retry = retry or raised
                    retrying.add(item.event.contact_id)
        log.info("broadcast.sent", sends=len(claimed), sent=len(sent),
                 failed=len(results) - len(sent))
        return fallbacks, retrying, retry


async def _rows_by_key(s: Any, keys: list[str]) -> dict[str, Delivery]:
    found: dict[str, Delivery] = {}
    for start in range(0, len(keys), 500):
        for row in await s.scalars(select(Delivery).where(
                Delivery.idempotency_key.in_(keys[start:start + 500]))):
            found[row.idempotency_key] = row
    return found


__all__ = ["BatchEntered", "BroadcastEntry"]
