"""Broadcast entry: a batch of contacts enters one journey together, and is sent to together.

Used by the activity that enters a schedule's batch (`activities.sweeps.enter_scheduled`). The
entry rules and the starting of runs are the core's (`cairn.events.bulk_entry`); what is here is
the part that acts: for a journey whose path is `[send ->] end` (`inline_path`), contacts get no
run of their own. The batch checks each contact as `prepare_send` would (reachability, consent,
quiet hours, frequency caps) and renders the template, reading only; then claims the ledger rows
`sending` (and writes the skips) in one statement of one transaction, with the entries; calls the
provider for each side by side; then settles the rows `sent` in one statement and closes the
entries in a second transaction. So a batch writes twice whatever its size, where runs of their
own would write about five times per contact.

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

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.exceptions import ApplicationError

from activities.context import contact_snapshot, step_log, template_scope
from activities.ledger import SENDING, SENT, Ledger
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
from cairn.privacy.scrub import scrub
from cairn.reachability import blocker
from cairn.store.db import Store
from cairn.store.schema import Delivery
from cairn.templates import TemplateRenderError, render
from cairn.unsubscribe import UnsubscribeScope, list_unsubscribe_headers, unsubscribe_url

log = get_logger(__name__)

WithEntries = Callable[[AsyncSession], Awaitable[set[str]]]
"""Run in the entries' transaction; returns the message ids of the events still held."""

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
class _Planned:
    """A contact's ledger row as checked and rendered, before it is written."""

    event: EventMessage
    request: SendRequest
    columns: dict[str, Any]
    to: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def claims(self) -> bool:
        return bool(self.columns["status"] == SENDING)


@dataclass
class _Claimed:
    event: EventMessage
    request: SendRequest
    message: OutgoingMessage
    row_id: int
    pending: dict[str, Any]
    """The row's response as claimed (what a retry needs), which the provider's answer joins."""


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

        `with_entries` runs first in the transaction that records the entries and returns the
        message ids of the events this batch still holds: the caller marks its events routed
        there, where its claim on them stands. From then on the entries say what happens to
        each contact (a redone batch reads them), so no relay routes those events again; an
        event whose claim lapsed (a relay took it meanwhile) is left to that relay."""
        plan = await plan_entries(self.store, journey, events, acting=acting)
        done = BatchEntered(decisions=list(plan.refused))
        inline = inline_path(journey)
        if inline is None:
            async with self.store.session() as s, s.begin():
                new = await _held(s, with_entries, plan.new)
                await record_entries(s, journey, new,
                                     lambda e: workflow_id(journey.key, e.contact_id))
            done.decisions += await start_runs(self.router, journey, new)
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
                everyone = await _held(s, with_entries, everyone)
                kept = {e.contact_id for e in everyone}
                new = [e for e in new if e.contact_id in kept]
                await record_entries(s, journey, new, lambda e: acting)
                await close_entries(s, acting, [e.contact_id for e in everyone],
                                    inline.outcome, now)
            done.decisions += [self._acted(journey, acting) for _ in everyone]
            return
        requests = {e.contact_id: self._request(journey, inline, e, acting, now)
                    for e in everyone}
        planned: list[_Planned] = []
        earlier: list[tuple[SendRequest, Delivery]] = []
        own_run: list[EventMessage] = []
        # Checks and rendering read only: the write transaction below holds no lock meanwhile
        # (on SQLite one writer at a time, so the batches side by side would queue behind it).
        async with self.store.session() as s:
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
                found = await self._check(s, request, event, done)
                if isinstance(found, _Planned):
                    planned.append(found)
                elif found == "own run":
                    own_run.append(event)
        claimed: list[_Claimed] = []
        async with self.store.session() as s, s.begin():
            kept = {e.contact_id for e in await _held(s, with_entries, everyone)}
            everyone = [e for e in everyone if e.contact_id in kept]
            new = [e for e in new if e.contact_id in kept]
            planned = [p for p in planned if p.event.contact_id in kept]
            own_run = [e for e in own_run if e.contact_id in kept]
            earlier = [(r, row) for r, row in earlier if r.context.contact_id in kept]
            rows = await _write_rows(s, [p.columns for p in planned])
            for plan in planned:
                row = rows.get(plan.columns["idempotency_key"])
                if row is None:  # another attempt wrote it meanwhile: settle it as a retry
                    earlier.append((plan.request, await _row(s, plan)))
                    continue
                if plan.claims:
                    parts = await self.delivery._track(s, plan.request, plan.columns["channel"],
                                                       row, plan.columns["rendered"], "")
                    message = self.delivery._message(plan.request, plan.columns["channel"],
                                                     plan.to, parts, plan.headers, row)
                    claimed.append(_Claimed(plan.event, plan.request, message, row.id,
                                            dict(plan.columns["response"])))
            held = {e.contact_id for e in own_run}
            await record_entries(s, journey, new,
                                 lambda e: (workflow_id(journey.key, e.contact_id)
                                            if e.contact_id in held else acting))
            fresh = {e.contact_id for e in new}
            await move_entries(s, acting, [e.contact_id for e in own_run
                                           if e.contact_id not in fresh], journey)
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
            track_links=journey.settings.track_links, track_opens=journey.settings.track_opens,
        )

    async def _check(self, s: Any, request: SendRequest, event: EventMessage,
                     done: BatchEntered) -> _Planned | str:
        """`prepare_send`'s checks and `deliver_message`'s rendering for one contact: the
        ledger row to write (a claim, a skip, a template error), or "own run" (held, or not in
        the store)."""
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
            done.count(status)
            return _Planned(event, request, {**fields, "channel": shown, "status": status,
                                             "reason": "; ".join(b.reason for _, b in blockers),
                                             "rendered": {}})
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
            done.count(skipped)
            return _Planned(event, request, {**fields, "channel": chosen, "status": skipped,
                                             "reason": reason, "rendered": {}})
        provider = delivery.channels.provider(chosen)
        link = unsubscribe_url(delivery.public_url,
                               UnsubscribeScope(contact.id, chosen, request.send.topic),
                               delivery.signing_key)
        scope = await template_scope(s, contact, request.trigger, request.journey_context)
        scope["unsubscribe_url"] = link
        try:
            parts = render(request.send.template, request.template, chosen, scope)
        except TemplateRenderError as error:
            step_log(context).warning("delivery.template_error", error=scrub(str(error)))
            done.count("failed")
            return _Planned(event, request, {**fields, "channel": chosen, "status": "failed",
                                             "reason": str(error), "rendered": {}})
        to = address_of(contact, chosen) or contact.id
        headers = (list_unsubscribe_headers(link)
                   if chosen == "email" and request.send.category == "marketing" else {})
        return _Planned(
            event, request.model_copy(update={"channel": chosen}),
            {**fields, "channel": chosen, "provider": provider.name, "status": SENDING,
             "reason": None, "rendered": parts,
             "response": _pending_response(contact, chosen, to, headers)},
            to=to, headers=headers)

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
            accepted = datetime.now(UTC)
            async with self.store.session() as s, s.begin():
                # One UPDATE statement for the batch (by primary key, executemany).
                await s.execute(update(Delivery), [
                    {"id": item.row_id, "status": SENT,
                     "provider": (receipt.provider
                                  or delivery.channels.provider(item.message.channel).name),
                     "provider_message_id": receipt.provider_message_id,
                     "response": {**item.pending, **(receipt.response or {})},
                     "sent_at": item.request.context.now,
                     "accepted_at": receipt.accepted_at or accepted}
                    for item, receipt in sent])
            for _ in sent:
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


async def _held(s: AsyncSession, with_entries: WithEntries | None,
                events: list[EventMessage]) -> list[EventMessage]:
    if with_entries is None:
        return events
    held = await with_entries(s)
    return [e for e in events if e.message_id in held]


async def _write_rows(s: AsyncSession, columns: list[dict[str, Any]]) -> dict[str, Delivery]:
    """Insert the ledger rows whose keys are free, in one statement; returns the rows this
    call wrote, by key (a key another attempt wrote meanwhile is left out)."""
    if not columns:
        return {}
    keys = [c["idempotency_key"] for c in columns]
    taken = set(await _rows_by_key(s, keys))
    new = [c for c in columns if c["idempotency_key"] not in taken]
    try:
        async with s.begin_nested():
            await s.execute(insert(Delivery), new)
    except IntegrityError:  # a concurrent attempt: one by one, each finding the winner's row
        mine = []
        for c in new:
            _, created = await Ledger.record(s, **c)
            if created:
                mine.append(c["idempotency_key"])
        new = [c for c in new if c["idempotency_key"] in mine]
    written = {c["idempotency_key"] for c in new}
    return {key: row for key, row in (await _rows_by_key(s, sorted(written))).items()}


async def _row(s: AsyncSession, plan: _Planned) -> Delivery:
    found = await _rows_by_key(s, [plan.columns["idempotency_key"]])
    return found[plan.columns["idempotency_key"]]


async def _rows_by_key(s: Any, keys: list[str]) -> dict[str, Delivery]:
    found: dict[str, Delivery] = {}
    for start in range(0, len(keys), 500):
        for row in await s.scalars(select(Delivery).where(
                Delivery.idempotency_key.in_(keys[start:start + 500]))):
            found[row.idempotency_key] = row
    return found


__all__ = ["BatchEntered", "BroadcastEntry"]
