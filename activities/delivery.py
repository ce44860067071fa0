"""Sending messages: plan where and when a send may go, then deliver it exactly once.

`prepare_send` (journey queue) decides: the first candidate channel the contact is reachable on
for the send's category, or a skip; for marketing, whether quiet hours hold it and until when.
It never sleeps: the interpreter waits on a durable timer and asks again. `deliver_message`
(delivery queue) renders the template part for the chosen channel and hands the message to the
provider. Until real providers arrive that is the `outbox` provider: the rendered message recorded
in the deliveries ledger (and the log).

Every decision lands in the ledger under the step's idempotency key `<workflow id>/<step>/
<iteration>`: a send as `sent`, a skip as `skipped:unreachable` / `skipped:consent` (written by
`prepare_send`, so the ledger shows sends that did not happen and why), a template that cannot
render as `failed`. A retried activity finds its row and repeats its answer instead of sending.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import activity

from activities.context import (
    TEMPLATE_ERROR,
    VALIDATION_ERROR,
    contact_snapshot,
    permanent,
    step_log,
)
from cairn.actions import (
    DELIVER_MESSAGE,
    PREPARE_SEND,
    SendOutcome,
    SendPlan,
    SendRequest,
    SendStatus,
)
from cairn.contact import ContactSnapshot
from cairn.durations import parse_time_of_day
from cairn.local_time import TimezoneError, quiet_hours_end, zone
from cairn.reachability import Blocker, blocker, normalised_phone
from cairn.store import deliveries as deliveries_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery
from cairn.templates import TemplateRenderError, message_scope, render

OUTBOX = "outbox"
"""The local provider: records the rendered message in the ledger instead of sending it."""


def _plan_of(row: Delivery) -> SendPlan:
    """The decision already recorded under this key (a retried or repeated prepare)."""
    if row.status.startswith("skipped:"):
        return SendPlan(status=_status(row.status), channel=row.channel, reason=row.reason or "")
    return SendPlan(status="ready", channel=row.channel, reason="already recorded")


def _status(value: str) -> SendStatus:
    allowed: tuple[SendStatus, ...] = (
        "ready", "sent", "skipped:unreachable", "skipped:consent", "deferred:quiet_hours", "failed",
    )
    for status in allowed:
        if value == status:
            return status
    return "failed"


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


class DeliveryActivities:
    """Send planning and delivery through the outbox provider."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _ledger_fields(self, request: SendRequest, now: datetime) -> dict[str, Any]:
        context = request.context
        return {
            "idempotency_key": context.idempotency_key,
            "kind": "send",
            "workflow_id": context.workflow_id,
            "journey_key": context.journey_key,
            "step": context.step,
            "contact_id": context.contact_id,
            "template": request.send.template,
            "category": request.send.category,
            "created_at": now,
        }

    @activity.defn(name=PREPARE_SEND)
    async def prepare_send(self, request: SendRequest) -> SendPlan:
        """Choose the channel, or hold for quiet hours, or skip (and record the skip).

        Checks candidates in order: address, suppression, consent for the category. None usable:
        a `skipped:*` row is written under the step's key and the plan says why for every
        candidate. A marketing send inside the quiet hours (contact's time zone, else the
        journey's) returns `deferred:quiet_hours` with `hold_until`; nothing is recorded, the
        interpreter waits and asks again. Transactional sends ignore quiet hours.
        """
        context = request.context
        bound = step_log(context)
        async with self.store.session() as s, s.begin():
            recorded = await deliveries_repo.find_delivery(s, context.idempotency_key)
            if recorded is not None:
                bound.info("send.plan_recorded", status=recorded.status, channel=recorded.channel)
                return _plan_of(recorded)
            contact = await contact_snapshot(s, context.contact_id)
            blockers: list[tuple[str, Blocker]] = []
            chosen: str | None = None
            for candidate in request.send.candidates():
                found = blocker(contact, candidate, request.send.category)
                if found is None:
                    chosen = candidate
                    break
                blockers.append((candidate, found))
            if chosen is None:
                status, shown = skip_status(blockers)
                row, _ = await deliveries_repo.record_delivery(
                    s, **self._ledger_fields(request, context.now),
                    channel=shown, status=status,
                    reason="; ".join(b.reason for _, b in blockers), rendered={},
                )
                bound.info("send.skipped", status=row.status, reason=row.reason)
                return SendPlan(status=_status(row.status), channel=row.channel,
                                reason=row.reason or "")
        hold_until = self._quiet_until(request, contact)
        if hold_until is not None:
            assert request.quiet_hours is not None
            reason = (f"quiet hours {request.quiet_hours.from_}-{request.quiet_hours.to} in "
                      f"{contact.timezone or request.default_timezone}")
            bound.info("send.deferred", channel=chosen, until=hold_until.isoformat(),
                       reason=reason)
            return SendPlan(status="deferred:quiet_hours", channel=chosen, hold_until=hold_until,
                            reason=reason)
        reason = f"{chosen}: reachable for {request.send.category}"
        bound.info("send.ready", channel=chosen)
        return SendPlan(status="ready", channel=chosen, reason=reason)

    def _quiet_until(self, request: SendRequest, contact: ContactSnapshot) -> datetime | None:
        quiet = request.quiet_hours
        if quiet is None or request.send.category != "marketing":
            return None
        try:
            zone(request.default_timezone)
            timezone = contact.timezone
            if timezone is not None:
                try:
                    zone(timezone)
                except TimezoneError:
                    step_log(request.context).warning("contact.bad_timezone", timezone=timezone)
                    timezone = None
            return quiet_hours_end(
                request.context.now, timezone, parse_time_of_day(quiet.from_),
                parse_time_of_day(quiet.to), default_tz=request.default_timezone,
            )
        except TimezoneError as error:
            raise permanent(f"journey settings.timezone: {error}", VALIDATION_ERROR) from error

    @activity.defn(name=DELIVER_MESSAGE)
    async def deliver_message(self, request: SendRequest) -> SendOutcome:
        """Render the template for the chosen channel and record it through the outbox provider.

        A second call with the same key returns the first outcome and writes nothing. The
        contact is checked again (an unsubscribe may have arrived since the plan): a channel
        that closed meanwhile records a skip instead of a send. A template that cannot render
        is recorded as `failed` and raised as a permanent `TemplateError`.
        """
        context = request.context
        bound = step_log(context)
        channel = request.channel
        if channel is None:
            raise permanent(
                "deliver_message needs the channel chosen by prepare_send (request.channel)",
                VALIDATION_ERROR,
            )
        fields = self._ledger_fields(request, context.now)
        async with self.store.session() as s, s.begin():
            recorded = await deliveries_repo.find_delivery(s, context.idempotency_key)
            if recorded is not None:
                bound.info("delivery.duplicate", delivery_id=recorded.id, status=recorded.status)
                return self._outcome(recorded)
            contact = await contact_snapshot(s, context.contact_id)
            closed = blocker(contact, channel, request.send.category)
            if closed is not None:
                status, _ = skip_status([(channel, closed)])
                row, _ = await deliveries_repo.record_delivery(
                    s, **fields, channel=channel, status=status, reason=closed.reason,
                    rendered={},
                )
                bound.info("send.skipped", status=status, reason=closed.reason)
                return self._outcome(row)
            scope = message_scope(
                contact.as_scope(),
                request.trigger.as_scope() if request.trigger else None,
                request.journey_context,
            )
            try:
                parts = render(request.send.template, request.template, channel, scope)
            except TemplateRenderError as error:
                failure: TemplateRenderError | None = error
            else:
                failure = None
            if failure is not None:
                await deliveries_repo.record_delivery(
                    s, **fields, channel=channel, status="failed", reason=str(failure),
                    rendered={},
                )
            else:
                row, new = await deliveries_repo.record_delivery(
                    s, **fields, channel=channel, provider=OUTBOX, status="sent", reason=None,
                    rendered=parts, response={"provider": OUTBOX,
                                              "to": address_of(contact, channel)},
                    sent_at=context.now,
                )
        if failure is not None:
            bound.warning("delivery.template_error", template=request.send.template,
                          error=str(failure))
            raise permanent(str(failure), TEMPLATE_ERROR) from failure
        if not new:
            bound.info("delivery.duplicate", delivery_id=row.id, status=row.status)
        else:
            bound.info("delivery.sent", delivery_id=row.id, channel=channel, provider=OUTBOX,
                       template=request.send.template)
        return self._outcome(row)

    @staticmethod
    def _outcome(row: Delivery) -> SendOutcome:
        return SendOutcome(status=_status(row.status), channel=row.channel, delivery_id=row.id,
                           reason=row.reason or "")
