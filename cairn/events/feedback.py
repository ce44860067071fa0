"""Delivery feedback: what providers report after a send becomes contact events and suppressions.

A provider's webhook (Postmark delivery/bounce/open/click, Twilio status callbacks and inbound
SMS) is parsed by the provider module into a `FeedbackEvent`; this module gives it consequences:

- stored once in `delivery_feedback` (providers retry their webhooks: one report, one event);
- a hard bounce or a complaint suppresses the channel, an unsubscribe (a link, SMS STOP)
  withdraws consent, START lifts the STOP, so reachability knows before the next send;
- an event `<channel>_<kind>` (`email_opened`, `email_bounced`, `sms_delivered`, `sms_replied`)
  is stored and routed for the contact, carrying the delivery's journey, step and template, so
  "if the reminder was not opened, send an SMS" is an ordinary `wait_for_event`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.channels.base import FeedbackEvent
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest, utc_now
from cairn.log import get_logger
from cairn.store import suppressions
from cairn.store.db import Store, insert_once
from cairn.store.schema import Contact, Delivery, DeliveryFeedback

log = get_logger(__name__)

_PHONE_MARKS = (" ", "-", ".", "(", ")", "/")
"""What `cairn.reachability.normalised_phone` strips from a number."""


@dataclass(frozen=True)
class FeedbackResult:
    """What one report did: its row, the contact and event it became, and whether it was new."""

    feedback_id: int
    duplicate: bool
    contact_id: str | None
    event: str | None
    delivery_id: int | None


def event_name(report: FeedbackEvent) -> str:
    return f"{report.channel}_{report.kind}"


def _dedupe_key(report: FeedbackEvent) -> str:
    """The same report retried hashes the same; two reports differ somewhere in what they say.

    The whole `detail` is part of it: Twilio's inbound messages carry no time, only their own
    MessageSid (in `detail`), so a second STOP after a START is news, not a retry; and a status
    callback's error code tells a temporary failure from the permanent one that follows it.
    """
    parts = [report.provider, report.kind, report.channel, report.provider_message_id or "",
             report.recipient or "",
             report.occurred_at.isoformat() if report.occurred_at else "",
             json.dumps(_json_ready(report.detail), sort_keys=True, default=str)]
    return "feedback/" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


async def _delivery_of(s: AsyncSession, report: FeedbackEvent) -> Delivery | None:
    if report.provider_message_id:
        row = await s.scalar(
            select(Delivery).where(Delivery.provider_message_id == report.provider_message_id)
        )
        if row is not None:
            return row
    delivery_id = report.metadata.get("delivery_id")
    if delivery_id and delivery_id.isdigit():
        return await s.get(Delivery, int(delivery_id))
    return None


def _compact_phone() -> ColumnElement[Any]:
    """The stored number without the punctuation reachability ignores (`+40 722-000 111`)."""
    compact: ColumnElement[Any] = func.replace(Contact.phone, _PHONE_MARKS[0], "")
    for mark in _PHONE_MARKS[1:]:
        compact = func.replace(compact, mark, "")
    return compact


async def _contact_by_address(s: AsyncSession, report: FeedbackEvent) -> str | None:
    """The contact a report names only by address (an inbound SMS from a number).

    Phones are stored as contacts gave them, and reachability sends to `+40 722 000 111` as to
    `+40722000111`: so a STOP from that number must find the contact however it was written.
    """
    address = (report.recipient or "").strip()
    if not address:
        return None
    if report.channel == "email":
        clause = func.lower(Contact.email) == address.lower()
        return await s.scalar(select(Contact.id).where(clause).order_by(Contact.id).limit(1))
    compact = "".join(ch for ch in address if ch not in _PHONE_MARKS)
    exact = await s.scalar(select(Contact.id).where(Contact.phone.in_(sorted({address, compact})))
                           .order_by(Contact.id).limit(1))
    if exact is not None:
        return exact
    return await s.scalar(select(Contact.id).where(_compact_phone() == compact)
                          .order_by(Contact.id).limit(1))


async def _apply(s: AsyncSession, report: FeedbackEvent, contact_id: str, now: datetime) -> str:
    """Close or reopen the channel as the report says; returns what was done (for the log)."""
    if report.kind in ("bounced", "complained", "failed") and report.permanent:
        done = await suppressions.suppress(s, contact_id, report.channel, now)
        return "suppressed" if done else ""
    if report.kind == "unsubscribed":
        if report.channel in ("sms", "whatsapp"):
            # STOP at the carrier blocks every message from the number, not only marketing.
            done = await suppressions.suppress(s, contact_id, report.channel, now)
        else:
            done = await suppressions.unsubscribe(s, contact_id, report.channel,
                                                  report.detail.get("topic"), now)
        return "unsubscribed" if done else ""
    if report.kind == "resubscribed":
        # Marketing consent comes back only when the contact resubscribed, not when the
        # sender's staff reactivated the address (after a bounce, say).
        done = await suppressions.resubscribe(
            s, contact_id, report.channel, now,
            grant_marketing=str(report.detail.get("origin") or "").lower() == "recipient",
        )
        return "resubscribed" if done else ""
    if report.kind == "replied" and report.detail.get("keyword") == "start":
        # START undoes a STOP; it is no consent to marketing (YES is an opt-in keyword too).
        done = await suppressions.resubscribe(s, contact_id, report.channel, now)
        return "resubscribed" if done else ""
    return ""


async def record_feedback(
    store: Store, ingest: Ingest, report: FeedbackEvent, *, now: datetime | None = None,
) -> FeedbackResult:
    """Store the report once, apply its consequences, and emit its event for the contact.

    The event's message id is the report's row (`feedback-<id>`), so a retried webhook tracks
    it again harmlessly: ingest keeps one event per message id, and when the first attempt
    committed the report but died before its event was stored, the retry stores it.
    """
    now = now or utc_now()
    async with store.session() as s, s.begin():
        delivery = await _delivery_of(s, report)
        contact_id = delivery.contact_id if delivery is not None else None
        if contact_id is None:
            contact_id = await _contact_by_address(s, report)
        key = _dedupe_key(report)
        row, new = await insert_once(
            s,
            DeliveryFeedback(
                dedupe_key=key, delivery_id=delivery.id if delivery is not None else None,
                contact_id=contact_id, provider=report.provider,
                provider_message_id=report.provider_message_id, kind=report.kind,
                channel=report.channel, recipient=report.recipient,
                permanent=report.permanent, detail=_json_ready(report.detail),
                occurred_at=report.occurred_at or now, received_at=now,
            ),
            lambda: s.scalar(select(DeliveryFeedback).where(DeliveryFeedback.dedupe_key == key)),
        )
        effect = await _apply(s, report, contact_id, now) if new and contact_id else ""
        # What the first report found stands: a retry must describe the same event.
        feedback_id, contact_id, occurred = row.id, row.contact_id, row.occurred_at
        delivery_id = row.delivery_id
        properties: dict[str, Any] = {"provider": report.provider, **_json_ready(report.detail)}
        if delivery is not None and delivery.id == delivery_id:
            properties.update(delivery_id=delivery.id, journey=delivery.journey_key,
                              step=delivery.step, template=delivery.template)
        if report.permanent:
            properties["permanent"] = True
    bound = log.bind(provider=report.provider, kind=report.kind, contact=contact_id,
                     feedback_id=feedback_id)
    if contact_id is None:
        if new:
            bound.warning("feedback.unmatched", recipient=report.recipient,
                          provider_message_id=report.provider_message_id)
        else:
            bound.info("feedback.duplicate")
        return FeedbackResult(feedback_id, not new, None, None, None)
    name = event_name(report)
    tracked = await ingest.track(TrackCall(
        userId=contact_id, event=name, properties=properties, timestamp=occurred,
        messageId=f"feedback-{feedback_id}",
    ))
    if new:
        bound.info("feedback.recorded", contact_event=name, effect=effect or None)
        return FeedbackResult(feedback_id, False, contact_id, name, delivery_id)
    if tracked.duplicate:
        bound.info("feedback.duplicate")
        return FeedbackResult(feedback_id, True, contact_id, None, delivery_id)
    bound.warning("feedback.event_recovered", contact_event=name)
    return FeedbackResult(feedback_id, True, contact_id, name, delivery_id)


def _json_ready(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in detail.items()}
