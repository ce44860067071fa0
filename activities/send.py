"""Sending messages: plan where and when a send may go, then deliver it exactly once.

`prepare_send` (journey queue) decides: the first candidate channel the contact is reachable on
for the send's category and topic, or a skip; for marketing, whether quiet hours or a frequency
cap hold it and until when (or, when the journey says so, skips it). It never sleeps: the
interpreter waits on a durable timer and asks again. `deliver_message` (delivery queue) renders
the template part for the chosen channel and hands the message to the channel's provider; given
no channel (what lean runs send, `workflows.run.LEAN_RUN_PATCH`), it makes `prepare_send`'s
decision itself, in the transaction that claims the ledger row, so a send costs one activity.

Exactly once. Every decision lands in the ledger under the send's key (`<workflow id>/<entry>/
<step>/<iteration>`, plus `/fallback-N` for a fallback channel), and the call to the provider
walks the ledger's states (`activities.ledger`): claimed as `sending`, then `sent`, `unconfirmed`,
released for a retry, or `failed`. A provider that refuses an address for good (hard bounce, dead
token) also closes it for the contact, so reachability knows before the next send plans.

Unconfirmed sends. When the request went out and no answer came back, a provider whose API can
tell (`SendLookup`: Postmark, Twilio) is asked whether it accepted the message, and a yes settles
the row `sent`. Otherwise the delivery policy's `unconfirmed` choice for the channel and category
decides: `resend` sends it again on Temporal's next attempt, `keep` leaves it `unconfirmed`.
A provider may list a message only some time after accepting it, so `settle_unconfirmed` (run by
the hourly segment sweep) asks again about the unconfirmed sends.

Not here: providers themselves (`cairn.channels`), and the actions that are not messages to the
contact (`activities.actions`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.typing import FilteringBoundLogger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import (
    TEMPLATE_ERROR,
    VALIDATION_ERROR,
    contact_snapshot,
    permanent,
    record_transitions,
    step_log,
    template_scope,
)
from activities.ledger import FAILED, UNCONFIRMED, Earlier, Ledger, Refused
from cairn import experiments, links, metrics
from cairn.channels.base import OutgoingMessage, Provider, ProviderError, Receipt, SendLookup
from cairn.channels.registry import ChannelSet, local_channels
from cairn.contact import ContactSnapshot, reads_scores
from cairn.contracts import (
    DELIVER_MESSAGE,
    PREPARE_SEND,
    PROVIDER_REJECTED,
    SEND_STATUSES,
    SETTLE_UNCONFIRMED,
    SendOutcome,
    SendPlan,
    SendRequest,
    SendStatus,
    UnconfirmedSweep,
)
from cairn.delivery_policy import DeliveryPolicy, cap_hold
from cairn.durations import parse_time_of_day
from cairn.journey import QuietHours, SendStep
from cairn.journey_run import COMPLETED
from cairn.local_time import TimezoneError, quiet_hours_end, zone
from cairn.log import get_logger
from cairn.privacy.scrub import scrub
from cairn.reachability import Blocker, blocker, normalised_phone
from cairn.store import deliveries as deliveries_repo
from cairn.store import entries as entries_repo
from cairn.store import holds, suppressions
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryLink
from cairn.templates import TemplateRenderError, render
from cairn.unsubscribe import UnsubscribeScope, list_unsubscribe_headers, unsubscribe_url

log = get_logger(__name__)

UNCONFIRMED_REASON = (
    "provider outcome unknown after an interrupted attempt; the delivery policy decides "
    "whether it is sent again (unconfirmed: resend) or kept (unconfirmed: keep)"
)


def _plan_of(row: Delivery) -> SendPlan:
    """The decision already recorded under this key (a retried or repeated prepare)."""
    if row.status.startswith("skipped:"):
        return SendPlan(status=_status(row.status), channel=row.channel,
                        reason=scrub(row.reason or ""))
    return SendPlan(status="ready", channel=row.channel, reason="already recorded")


def _status(value: str) -> SendStatus:
    for status in SEND_STATUSES:
        if value == status:
            return status
    return "unconfirmed" if value == "sending" else "failed"


def skip_status(blockers: list[tuple[str, Blocker]]) -> tuple[SendStatus, str | None]:
    """`skipped:consent` when consent alone kept a channel closed, else `skipped:unreachable`.

    Returns the status and the channel that decided it (the one to show in the ledger).
    """
    for channel, found in blockers:
        if found.cause == "consent":
            return "skipped:consent", channel
    return "skipped:unreachable", blockers[0][0] if blockers else None


def address_of(contact: ContactSnapshot, channel: str) -> str | None:
    """Where a provider would deliver on a channel: address, number, token or endpoint."""
    if channel == "email":
        return contact.email
    if channel in ("sms", "whatsapp"):
        return normalised_phone(contact.phone)
    if channel == "push":
        return next((t for t in contact.push_tokens if t), None)
    if channel == "web_push":
        return next((s.endpoint for s in contact.web_push if s.endpoint), None)
    return contact.id


def _web_push_keys(contact: ContactSnapshot, endpoint: str | None) -> dict[str, str]:
    return next((s.keys for s in contact.web_push if s.endpoint == endpoint), {})


def _pending_response(
    contact: ContactSnapshot, channel: str, to: str, headers: dict[str, str],
) -> dict[str, Any]:
    """What a retry needs to send the same message again: recipient, headers, push keys."""
    pending: dict[str, Any] = {"to": to}
    if headers:
        pending["headers"] = headers
    if channel == "web_push":
        pending["keys"] = _web_push_keys(contact, to)
    return pending


def _message_of_row(row: Delivery) -> OutgoingMessage:
    """The message an unconfirmed row holds, as the provider got it (for a lookup)."""
    response = row.response or {}
    return OutgoingMessage(
        channel=row.channel or "", to=str(response.get("to") or ""),
        parts=dict(row.rendered or {}), category=row.category or "marketing",
        idempotency_key=row.idempotency_key, contact_id=row.contact_id or "",
        headers=dict(response.get("headers") or {}),
        metadata={"journey": row.journey_key or "", "step": row.step or "",
                  "contact": row.contact_id or "", "template": row.template or "",
                  "delivery_id": str(row.id)},
        extra={"now": row.planned_at or row.created_at},
    )


def step_log_of(row: Delivery) -> FilteringBoundLogger:
    return log.bind(journey=row.journey_key, contact=row.contact_id, step=row.step,
                    workflow_id=row.workflow_id, delivery_id=row.id)


class DeliveryActivities:
    """Send planning (journey queue) and delivery through the channel's provider (delivery
    queue). `channels` defaults to the local providers: outbox, and the inbox for in-app."""

    def __init__(
        self,
        store: Store,
        channels: ChannelSet | None = None,
        policy: DeliveryPolicy | None = None,
        *,
        public_url: str = "http://127.0.0.1:8000",
        signing_key: bytes = b"cairn-local-unsubscribe-key",
    ) -> None:
        self.store = store
        self.channels = channels or local_channels(store)
        self.policy = policy or DeliveryPolicy()
        self.public_url = public_url
        self.signing_key = signing_key
        self.ledger = Ledger(store, "delivery", UNCONFIRMED_REASON, merges_response=True)

    def _ledger_fields(self, request: SendRequest, now: datetime) -> dict[str, Any]:
        context = request.context
        return {
            "idempotency_key": request.ledger_key,
            "kind": "send",
            "workflow_id": context.workflow_id,
            "journey_key": context.journey_key,
            "step": context.step,
            "contact_id": context.contact_id,
            "template": request.template_name,
            "variant": request.variant,
            "category": request.send.category,
            "created_at": now,
            "planned_at": now,
        }

    # ------------------------------------------------------------------ planning

    @activity.defn(name=PREPARE_SEND)
    async def prepare_send(self, request: SendRequest) -> SendPlan:
        """Choose the channel, or hold (quiet hours, frequency cap), or skip (and record why).

        Checks candidates in order: channel enabled, address, suppression, consent for the
        category and topic. None usable: a `skipped:*` row is written under the send's key and the
        plan says why for every candidate. A marketing send inside quiet hours (the journey's,
        or the channel's from the delivery policy, in the contact's time zone) or over a cap
        returns `deferred:*` with `hold_until`, or with `when_held: skip` records a skip.
        Transactional sends are never held.
        """
        context = request.context
        bound = step_log(context)
        async with self.store.session() as s, s.begin():
            await record_transitions(s, context)
            recorded = await deliveries_repo.find_delivery(s, request.ledger_key)
            if recorded is not None:
                bound.info("send.plan_recorded", status=recorded.status, channel=recorded.channel)
                return _plan_of(recorded)
            contact = await contact_snapshot(s, context.contact_id,
                                             scores=reads_scores(request.template))
            return await self._decide(s, request, contact)

    async def _decide(
        self, s: AsyncSession, request: SendRequest, contact: ContactSnapshot,
    ) -> SendPlan:
        """The plan for a send no row records yet (a skip is recorded in `s`)."""
        bound = step_log(request.context)
        blockers: list[tuple[str, Blocker]] = []
        chosen: str | None = None
        for candidate in request.candidates():
            found = blocker(contact, candidate, request.send.category,
                            topic=request.send.topic, disabled=self.channels.disabled)
            if found is None:
                chosen = candidate
                break
            blockers.append((candidate, found))
        if chosen is None:
            status, shown = skip_status(blockers)
            return await self._skip(s, request, status, shown,
                                    "; ".join(b.reason for _, b in blockers))
        hold = self._quiet_until(request, contact, chosen)
        if hold is None and request.send.category == "marketing":
            hold = await self._cap_until(s, request, chosen)
        if hold is not None:
            status, until, reason = hold
            if request.when_held == "skip":
                skipped: SendStatus = ("skipped:quiet_hours"
                                       if status == "deferred:quiet_hours"
                                       else "skipped:frequency_cap")
                return await self._skip(s, request, skipped, chosen, reason)
            bound.info("send.deferred", channel=chosen, until=until.isoformat(), reason=reason)
            cause = status.removeprefix("deferred:")
            context = request.context
            if await holds.record_hold(
                    s, idempotency_key=request.ledger_key, reason=cause, held_at=context.now,
                    until=until, workflow_id=context.workflow_id,
                    journey_key=context.journey_key, step=context.step,
                    contact_id=context.contact_id, template=request.template_name,
                    variant=request.variant, channel=chosen):
                metrics.SEND_HOLDS.labels(reason=cause).inc()
            return SendPlan(status=status, channel=chosen, hold_until=until, reason=reason)
        bound.info("send.ready", channel=chosen)
        return SendPlan(status="ready", channel=chosen,
                        reason=f"{chosen}: reachable for {request.send.category}")

    async def _skip(
        self, s: Any, request: SendRequest, status: SendStatus, channel: str | None, reason: str,
    ) -> SendPlan:
        row, _ = await self.ledger.record(
            s, **self._ledger_fields(request, request.context.now),
            channel=channel, status=status, reason=reason, rendered={},
        )
        step_log(request.context).info("send.skipped", status=row.status, reason=row.reason)
        return SendPlan(status=_status(row.status), channel=row.channel,
                        reason=scrub(row.reason or ""))

    def _quiet_until(
        self, request: SendRequest, contact: ContactSnapshot, channel: str,
    ) -> tuple[SendStatus, datetime, str] | None:
        """The latest end of the quiet hours that hold this send now, journey's and channel's."""
        if request.send.category != "marketing":
            return None
        windows: list[QuietHours] = []
        if request.quiet_hours is not None:
            windows.append(request.quiet_hours)
        if channel in self.policy.quiet_hours:
            windows.append(self.policy.quiet_hours[channel])
        try:
            zone(request.default_timezone)
        except TimezoneError as error:
            raise permanent(f"journey settings.timezone: {error}", VALIDATION_ERROR) from error
        timezone = contact.timezone
        if timezone is not None:
            try:
                zone(timezone)
            except TimezoneError:
                step_log(request.context).warning("contact.bad_timezone", timezone=timezone)
                timezone = None
        latest: tuple[datetime, QuietHours] | None = None
        for quiet in windows:
            end = quiet_hours_end(
                request.context.now, timezone, parse_time_of_day(quiet.from_),
                parse_time_of_day(quiet.to), default_tz=request.default_timezone,
            )
            if end is not None and (latest is None or end > latest[0]):
                latest = (end, quiet)
        if latest is None:
            return None
        end, quiet = latest
        reason = (f"quiet hours {quiet.from_}-{quiet.to} on {channel} in "
                  f"{timezone or request.default_timezone}")
        return "deferred:quiet_hours", end, reason

    async def _cap_until(
        self, s: Any, request: SendRequest, channel: str,
    ) -> tuple[SendStatus, datetime, str] | None:
        """The latest time a frequency cap lets this marketing send go, if one holds it now."""
        caps = [c for c in self.policy.caps if c.channel in (None, channel)]
        if not caps:
            return None
        now = request.context.now
        longest = max(c.window for c in caps)
        rows = (await s.execute(
            select(Delivery.channel, Delivery.sent_at).where(
                Delivery.contact_id == request.context.contact_id,
                Delivery.kind == "send",
                Delivery.category == "marketing",
                # an unconfirmed send may have arrived: it counts against the cap
                Delivery.status.in_(("sent", UNCONFIRMED)),
                Delivery.sent_at > now - longest,
            )
        )).all()
        latest: tuple[datetime, str] | None = None
        for cap in caps:
            times = [sent for ch, sent in rows
                     if sent is not None and (cap.channel is None or ch == cap.channel)]
            until = cap_hold(cap, channel, times, now)
            if until is not None and (latest is None or until > latest[0]):
                latest = (until, cap.describe())
        if latest is None:
            return None
        return "deferred:frequency_cap", latest[0], f"frequency cap: {latest[1]}"

    # ------------------------------------------------------------------ delivery

    @activity.defn(name=DELIVER_MESSAGE)
    async def deliver_message(self, request: SendRequest) -> SendOutcome:
        """Deliver the send (`_deliver`); for a send whose experiment picks a winner, send the
        decided winner instead of the run's arm, and after a send see whether the figures now
        decide one (`cairn.experiments`): no activity of its own, so a lean run's send stays one
        activity."""
        if not request.variant_templates:
            return await self._deliver(request)
        request = await self._with_winner(request)
        outcome = await self._deliver(request)
        if outcome.status == "sent":
            await self._decide_experiment(request)
        return outcome

    async def _with_winner(self, request: SendRequest) -> SendRequest:
        async with self.store.session() as s:
            decided = await experiments.decision_of(s, self._site(request))
        if decided is None or decided.winner == request.variant \
                or decided.winner not in request.variant_templates:
            return request
        return request.model_copy(update={"variant": decided.winner,
                                          "template": request.variant_templates[decided.winner]})

    @staticmethod
    def _site(request: SendRequest) -> experiments.Site:
        context = request.context
        step = SendStep.model_validate({"send": request.send, "next": "end"})
        return experiments.Site(context.journey_key, context.journey_version, context.step, step,
                                step.send.experiment or experiments.DEFAULT_METRIC,
                                tuple(request.goal_events))

    async def _decide_experiment(self, request: SendRequest) -> None:
        """Take the experiment's decision if the figures allow; a failure here never fails the
        send (the next send tries again)."""
        context = request.context
        site = self._site(request)
        try:
            async with self.store.session() as s, s.begin():
                row = await experiments.take_decision(s, site, context.now)
                decided = (row.winner, row.reason) if row is not None else None
        except Exception as error:  # figures are best effort; the send is not
            step_log(context).warning("experiment.decision_failed", error=str(error))
            return
        if decided is not None:
            step_log(context).info("experiment.decided", winner=decided[0], reason=decided[1])

    async def _deliver(self, request: SendRequest) -> SendOutcome:
        """Render the template for the chosen channel and send it through the provider, once.

        Without a channel in the request it first plans the send as `prepare_send` does, in the
        same transaction as the ledger claim: a hold comes back as `deferred:*` with
        `hold_until` (the run waits and calls again), a skip is recorded and returned. A second
        call with the same key returns the first outcome. The contact is checked again (an
        unsubscribe may have arrived since the plan): a channel that closed meanwhile records a
        skip instead of a send. A template that cannot render is recorded as `failed` and raised
        as a permanent `TemplateError`; a provider's permanent refusal as a permanent
        `ProviderRejected` (the step then tries its next channel), naming the channel in its
        details when this call chose it.
        """
        context = request.context
        bound = step_log(context)
        closing = _EntryClosing(request)
        prepared: Delivery | TemplateRenderError | tuple[OutgoingMessage, Delivery] | None = None
        earlier: Earlier | None = None
        sent: Receipt | None = None
        async with self.store.session() as s, s.begin():
            await record_transitions(s, context)
            channel = request.channel
            contact: ContactSnapshot | None = None
            recorded = True
            if channel is None:
                row = await deliveries_repo.find_delivery(s, request.ledger_key)
                if row is not None and (row.channel is None or row.status.startswith("skipped:")):
                    return self._outcome(row)
                if row is None:
                    recorded = False
                    contact = await contact_snapshot(s, context.contact_id,
                                                     scores=reads_scores(request.template))
                    plan = await self._decide(s, request, contact)
                    if plan.status != "ready" or plan.channel is None:
                        return SendOutcome(status=plan.status, channel=plan.channel,
                                           reason=plan.reason, hold_until=plan.hold_until,
                                           variant=request.variant)
                    channel = plan.channel
                else:
                    channel = row.channel
            assert channel is not None  # a row without one is a skip, answered above
            provider = self.channels.provider(channel)
            bound = bound.bind(channel=channel, provider=provider.name)
            resend = self.policy.on_unconfirmed(channel, request.send.category) == "resend"
            if recorded:
                earlier = await self.ledger.earlier(s, request.ledger_key, now=context.now,
                                                    idempotent=provider.idempotent, log=bound,
                                                    resend=resend)
            if earlier is not None and earlier.settled and not earlier.unconfirmed:
                return self._outcome(earlier.row)
            if earlier is not None:
                message = self._message_from_row(request, earlier.row)
                row_id = earlier.row.id
            else:
                contact = contact or await contact_snapshot(
                    s, context.contact_id, scores=reads_scores(request.template))
                prepared = await self._prepare_message(s, request, channel, contact, provider,
                                                       known_absent=not recorded)
                if isinstance(prepared, Delivery):
                    return self._outcome(prepared)
                if not isinstance(prepared, TemplateRenderError):
                    message, claimed = prepared
                    row_id = claimed.id
                    if getattr(provider, "records_only", False):
                        # Nothing leaves the process: the claim and its settlement commit
                        # together, so the send costs one transaction.
                        sent = await provider.send(message)
                        self.ledger.settle_sent(
                            claimed, context.now, response=sent.response,
                            message_id=sent.provider_message_id, provider=sent.provider,
                            accepted_at=sent.accepted_at)
                        await closing.close(s)
        if sent is not None:
            bound.info("delivery.sent", delivery_id=row_id, template=request.template_name,
                       provider_message_id=sent.provider_message_id)
            closing.log(bound)
            return SendOutcome(status="sent", channel=channel, delivery_id=row_id, reason="",
                               variant=request.variant, entry_closed=closing.done)
        if isinstance(prepared, TemplateRenderError):
            raise permanent(str(prepared), TEMPLATE_ERROR) from prepared
        if earlier is not None and earlier.unconfirmed:
            # An earlier attempt may have gone through: ask the provider before anything else.
            found = await self._look_up(provider, message, row_id, bound)
            if found is not None or earlier.settled:
                return self._outcome(found or earlier.row)
            await self._count_resend(row_id)
            bound.warning("delivery.resend", delivery_id=row_id)
        try:
            receipt = await provider.send(message)
        except ProviderError as error:
            try:
                failed = await self.ledger.failed(row_id, error, idempotent=provider.idempotent,
                                                  now=context.now, log=bound, resend=resend,
                                                  refused=self._refused(message, context.now))
            except ApplicationError as refused:
                if request.channel is None and refused.type == PROVIDER_REJECTED:
                    # the run did not choose the channel: say which one to exclude next
                    raise ApplicationError(refused.message, channel, type=PROVIDER_REJECTED,
                                           non_retryable=True) from error
                raise
            if failed.status == UNCONFIRMED:
                failed = await self._look_up(provider, message, row_id, bound) or failed
            return self._outcome(failed)
        row = await self.ledger.sent(row_id, context.now, response=receipt.response,
                                     message_id=receipt.provider_message_id,
                                     provider=receipt.provider, accepted_at=receipt.accepted_at,
                                     also=closing.close)
        bound.info("delivery.sent", delivery_id=row.id, template=request.template_name,
                   provider_message_id=receipt.provider_message_id)
        closing.log(bound)
        return self._outcome(row).model_copy(update={"entry_closed": closing.done})

    async def _look_up(
        self, provider: Provider, message: OutgoingMessage, row_id: int,
        bound: FilteringBoundLogger,
    ) -> Delivery | None:
        """The row settled `sent` when the provider's API shows it accepted the message; None
        when it cannot tell (no lookup, no such message yet, the lookup failed)."""
        if not isinstance(provider, SendLookup):
            return None
        try:
            receipt = await provider.find_sent(message)
        except ProviderError as error:
            bound.warning("delivery.lookup_failed", delivery_id=row_id, error=scrub(str(error)))
            return None
        if receipt is None:
            bound.info("delivery.lookup_not_found", delivery_id=row_id)
            return None
        return await self.ledger.confirmed(row_id, message_id=receipt.provider_message_id,
                                           accepted_at=receipt.accepted_at,
                                           response=receipt.response, log=bound)

    @activity.defn(name=SETTLE_UNCONFIRMED)
    async def settle_unconfirmed(self, request: UnconfirmedSweep) -> int:
        """Ask the providers that can tell (`SendLookup`) about unconfirmed sends, oldest first;
        settle those they accepted `sent`. Returns how many were settled."""
        async with self.store.session() as s:
            rows = await deliveries_repo.unconfirmed_sends(s, limit=request.limit)
        settled = 0
        for row in rows:
            provider = self.channels.providers.get(row.channel or "")
            if provider is None or provider.name != row.provider \
                    or not isinstance(provider, SendLookup):
                continue
            bound = step_log_of(row).bind(channel=row.channel, provider=provider.name)
            if await self._look_up(provider, _message_of_row(row), row.id, bound) is not None:
                settled += 1
        return settled

    async def _count_resend(self, row_id: int) -> None:
        async with self.store.session() as s, s.begin():
            row = await s.get(Delivery, row_id)
            assert row is not None
            self.ledger.count_resend(row)

    async def _prepare_message(
        self, s: Any, request: SendRequest, channel: str, contact: ContactSnapshot,
        provider: Provider, *, known_absent: bool = False,
    ) -> Delivery | TemplateRenderError | tuple[OutgoingMessage, Delivery]:
        """Check, render and claim the row as `sending`; or the skip row it wrote, or the
        template error it recorded as `failed` (raised once that row is committed).
        `known_absent`: the ledger key was looked up in `s` and not found."""
        context = request.context
        fields = self._ledger_fields(request, context.now)
        closed = blocker(contact, channel, request.send.category, topic=request.send.topic,
                         disabled=self.channels.disabled)
        if closed is not None:
            status, _ = skip_status([(channel, closed)])
            row, _ = await self.ledger.record(
                s, **fields, channel=channel, status=status, reason=closed.reason, rendered={},
            )
            step_log(context).info("send.skipped", status=status, reason=closed.reason)
            return row
        link = unsubscribe_url(
            self.public_url,
            UnsubscribeScope(contact.id, channel, request.send.topic),
            self.signing_key,
        )
        scope = await template_scope(s, contact, request.trigger, request.journey_context,
                                     template=request.template)
        scope["unsubscribe_url"] = link
        try:
            parts = render(request.template_name, request.template, channel, scope)
        except TemplateRenderError as error:
            row, _ = await self.ledger.record(
                s, **fields, channel=channel, status=FAILED, reason=str(error), rendered={},
            )
            step_log(context).warning("delivery.template_error", template=request.template_name,
                                      error=scrub(str(error)))
            return error
        to = address_of(contact, channel) or contact.id
        headers = (list_unsubscribe_headers(link)
                   if channel == "email" and request.send.category == "marketing" else {})
        row = await self.ledger.claim(
            s, **fields, channel=channel, provider=provider.name, reason=None, rendered=parts,
            response=_pending_response(contact, channel, to, headers), known_absent=known_absent,
        )
        if row.rendered == parts:  # not a row another attempt claimed (and rewrote) first
            parts = await self._track(s, request, channel, row, parts, link)
        # The row itself (the session keeps it only weakly; the caller may settle it)
        return self._message(request, channel, to, parts, headers, row), row

    async def _track(
        self, s: AsyncSession, request: SendRequest, channel: str, row: Delivery,
        parts: dict[str, str], unsubscribe: str,
    ) -> dict[str, str]:
        """The parts with their links rewritten to signed redirects (and the open pixel), the
        links stored under the claimed row (`cairn.links`); the parts as they are when the send
        or its journey switched tracking off."""
        send = request.send
        # the send's choice, else the journey's, else links tracked and opens not
        track_links = next((v for v in (send.track_links, request.track_links) if v is not None),
                           True)
        track_opens = next((v for v in (send.track_opens, request.track_opens) if v is not None),
                           False)
        if not (track_links or track_opens) or channel not in links.TRACKED_CHANNELS:
            return parts
        public = self.public_url.rstrip("/")
        tracked = parts
        if track_links:
            def keep(url: str) -> bool:
                return (url == unsubscribe or "/v1/unsubscribe" in url
                        or url.startswith((public + links.CLICK_PATH, public + links.OPEN_PATH)))

            rewritten = links.rewrite_links(
                channel, parts, keep=keep,
                redirect=lambda position: links.click_url(public, row.id, position,
                                                          self.signing_key))
            tracked = rewritten.parts
            s.add_all(DeliveryLink(delivery_id=row.id, position=position,
                                   contact_id=row.contact_id, url=link.url, label=link.label)
                      for position, link in enumerate(rewritten.links))
        if track_opens and channel == "email" and tracked.get("html"):
            tracked = {**tracked, "html": links.add_open_pixel(
                tracked["html"], links.open_pixel_url(public, row.id, self.signing_key))}
        if tracked != parts:
            row.rendered = tracked
        return tracked

    def _message(
        self, request: SendRequest, channel: str, to: str, parts: dict[str, str],
        headers: dict[str, str], row: Delivery,
    ) -> OutgoingMessage:
        context = request.context
        extra: dict[str, Any] = {"now": context.now}
        keys = (row.response or {}).get("keys")
        if keys:
            extra["keys"] = keys
        return OutgoingMessage(
            channel=channel, to=to, parts=dict(parts), category=request.send.category,
            idempotency_key=request.ledger_key, contact_id=context.contact_id,
            headers=dict(headers),
            metadata={"journey": context.journey_key, "step": context.step,
                      "contact": context.contact_id, "template": request.template_name,
                      "delivery_id": str(row.id)},
            extra=extra,
        )

    def _message_from_row(self, request: SendRequest, row: Delivery) -> OutgoingMessage:
        """The same message again, for a provider that de-duplicates by idempotency key."""
        response = row.response or {}
        return self._message(request, row.channel or "", str(response.get("to") or ""),
                             dict(row.rendered or {}), dict(response.get("headers") or {}), row)

    def _refused(self, message: OutgoingMessage, now: datetime) -> Refused:
        """What a permanent refusal adds to the row: the provider's status and code, and for a
        dead address or token, closing it for the contact."""
        async def refused(s: AsyncSession, row: Delivery, error: ProviderError) -> None:
            row.response = {**(row.response or {}), "status": error.status, "code": error.code}
            if error.invalid_recipient:
                await self._close_address(s, message, now)
        return refused

    @staticmethod
    async def _close_address(s: Any, message: OutgoingMessage, now: datetime) -> None:
        """A dead address or token: reachability must know before the next send plans."""
        if message.channel == "push":
            await suppressions.drop_push_token(s, message.contact_id, message.to, now)
        elif message.channel == "web_push":
            await suppressions.drop_web_push(s, message.contact_id, message.to, now)
        else:
            await suppressions.suppress(s, message.contact_id, message.channel, now)

    @staticmethod
    def _outcome(row: Delivery) -> SendOutcome:
        # the reason may quote a provider's answer (the address it refused): the row keeps it,
        # the run's history gets it scrubbed
        return SendOutcome(status=_status(row.status), channel=row.channel, delivery_id=row.id,
                           reason=scrub(row.reason or ""), variant=row.variant)


class _EntryClosing:
    """A last send's close of its run's entry (`SendRequest.closes_entry`), written with the
    ledger row that settles the send `sent`: the run then needs no `finish_entry`."""

    def __init__(self, request: SendRequest) -> None:
        self.request = request
        self.done = False
        self.closed = 0

    async def close(self, s: AsyncSession) -> None:
        if not self.request.closes_entry:
            return
        context = self.request.context
        self.closed = await entries_repo.close_entry(s, context.workflow_id, COMPLETED,
                                                     context.now)
        self.done = True

    def log(self, bound: FilteringBoundLogger) -> None:
        if self.done:
            bound.info("entry.finished" if self.closed else "entry.none_open",
                       outcome=COMPLETED, closed=self.closed, by="send")
