"""A contact's timeline: what it did and what Cairn did to it, newest first, from the store.

One service function, `contact_timeline`, answers `GET /v1/contacts/{id}/timeline` and the
console's contact page: events, journey entries and how they ended, each step its runs went
through (from the step transitions the runs record: reached when, left by which route to where,
or caught there by an exit goal), what the steps did (messages with their status and the
providers' feedback, score changes with their reason, tasks), and, for a message that did not
go, why (`WHY_NOT_SENT`: no consent, unreachable, a frequency cap, quiet hours, an unconfirmed
provider call, a refusal).

Not here: the contact's profile (`cairn.store.contacts.snapshot`), where a run is now (Temporal's
`state` query, `cairn.run_views`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cairn.store.db import Store
from cairn.store.schema import (
    Contact,
    Delivery,
    DeliveryFeedback,
    Entry,
    Event,
    ScoreChangeRecord,
    StepTransitionRecord,
    Task,
)

__all__ = ["ROUTE_MEANINGS", "WHY_NOT_SENT", "ContactTimeline", "TimelineItem",
           "UnknownContact", "contact_timeline", "step_left", "why_not_sent"]

DEFAULT_LIMIT = 200

WHY_NOT_SENT = {
    "skipped:consent": "no consent for this category of message",
    "skipped:unreachable": "unreachable on this channel (no address, token or subscription)",
    "skipped:frequency_cap": "held back by the frequency cap",
    "skipped:quiet_hours": "it fell in quiet hours and the step skips held sends",
    "skipped:unconfirmed": "the send was not confirmed",
    "unconfirmed": "unconfirmed: the provider call was interrupted and its outcome is unknown",
    "failed": "the provider refused it, or the template did not render",
    "sending": "still sending: the provider has not answered yet",
}
"""Why a message did not go, by ledger status (`activities.send`)."""

ROUTE_MEANINGS = {
    "next": "done",
    "then": "the condition held, or the awaited event came",
    "else": "the condition did not hold",
    "timeout_next": "the wait timed out",
    "missing": "the date to wait for was missing",
    "on_failure": "the send failed",
    "holdout": "held out by the split (the control group)",
    "end": "an end step",
    "failed": "the run failed here",
}
"""What leaving a step by a route says (`cairn.journey_run.StepTransition.left_by`)."""
EXIT_PREFIX = "exit:"

ItemKind = Literal["event", "entry", "exit", "step", "message", "score", "task"]


class UnknownContact(LookupError):
    """No contact has this id."""


class TimelineItem(BaseModel):
    """One thing that happened to a contact."""

    at: datetime
    kind: ItemKind
    title: str = Field(description="what happened, in a few words")
    journey: str | None = None
    step: str | None = None
    workflow_id: str | None = Field(default=None, description="the run it happened in")
    status: str | None = Field(default=None, description="a message's ledger status, an "
                                                         "entry's outcome, a task's status")
    reason: str | None = Field(default=None, description="why: the step's reason, how a step "
                                                         "was left, or why a message did not go")
    feedback: list[str] = Field(default_factory=list, description="a message's provider "
                                                                  "reports, oldest first")
    detail: dict[str, Any] = Field(default_factory=dict, description="ids and figures")


class ContactTimeline(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "contact_id": "c-1", "items": [
            {"at": "2026-03-02T11:00:00Z", "kind": "message", "title": "email cart-reminder",
             "journey": "cart-abandonment", "step": "email_reminder",
             "workflow_id": "journey/cart-abandonment/c-1", "status": "skipped:consent",
             "reason": "no consent for this category of message", "feedback": [],
             "detail": {"delivery_id": 7, "channel": "email"}},
            {"at": "2026-03-02T10:59:58Z", "kind": "step", "title": "reached push_or_email",
             "journey": "cart-abandonment", "step": "push_or_email",
             "workflow_id": "journey/cart-abandonment/c-1", "status": "else",
             "reason": "left by else (the condition did not hold) to email_reminder",
             "feedback": [], "detail": {"visit": 1, "seq": 3, "left_by": "else",
                                        "left_at": "2026-03-02T10:59:59Z",
                                        "next_step": "email_reminder", "version": 1}},
            {"at": "2026-03-02T09:00:00Z", "kind": "entry", "title": "entered cart-abandonment",
             "journey": "cart-abandonment", "step": None,
             "workflow_id": "journey/cart-abandonment/c-1", "status": "completed",
             "reason": None, "feedback": [], "detail": {"version": 1, "entry_id": 3}},
        ], "truncated": False}]})

    contact_id: str
    items: list[TimelineItem] = Field(description="newest first")
    truncated: bool = Field(description="older items were left out (more than the limit)")


def why_not_sent(status: str, reason: str | None) -> str | None:
    """Why a message with this ledger status did not go (None: it went)."""
    if status in ("sent", "recorded"):
        return None
    why = WHY_NOT_SENT.get(status) or (f"skipped: {status[8:]}" if status.startswith(
        "skipped:") else status)
    return f"{why} ({reason})" if reason and reason not in why else why


async def contact_timeline(store: Store, contact_id: str, *,
                           limit: int = DEFAULT_LIMIT) -> ContactTimeline:
    """The newest `limit` items of each kind, merged newest first. Raises `UnknownContact`."""
    async with store.session() as s:
        if await s.get(Contact, contact_id) is None:
            raise UnknownContact(f"no contact {contact_id!r}: send a track or identify call "
                                 "for it first")
        events = (await s.execute(select(Event).where(Event.contact_id == contact_id)
                                  .order_by(Event.timestamp.desc(), Event.id.desc())
                                  .limit(limit))).scalars().all()
        entries = (await s.execute(select(Entry).where(Entry.contact_id == contact_id)
                                   .order_by(Entry.entered_at.desc(), Entry.id.desc())
                                   .limit(limit))).scalars().all()
        deliveries = (await s.execute(select(Delivery).where(Delivery.contact_id == contact_id)
                                      .order_by(Delivery.created_at.desc(), Delivery.id.desc())
                                      .limit(limit))).scalars().all()
        feedback: dict[int, list[str]] = {}
        if deliveries:
            rows = await s.execute(
                select(DeliveryFeedback.delivery_id, DeliveryFeedback.kind,
                       DeliveryFeedback.occurred_at)
                .where(DeliveryFeedback.delivery_id.in_([d.id for d in deliveries]))
                .order_by(DeliveryFeedback.occurred_at, DeliveryFeedback.id))
            for delivery_id, kind, _at in rows.all():
                if delivery_id is not None:
                    feedback.setdefault(delivery_id, []).append(kind)
        scores = (await s.execute(select(ScoreChangeRecord)
                                  .where(ScoreChangeRecord.contact_id == contact_id)
                                  .order_by(ScoreChangeRecord.at.desc()).limit(limit))
                  ).scalars().all()
        tasks = (await s.execute(select(Task).where(Task.contact_id == contact_id)
                                 .order_by(Task.created_at.desc()).limit(limit))).scalars().all()
        visits = (await s.execute(select(StepTransitionRecord)
                                  .where(StepTransitionRecord.contact_id == contact_id)
                                  .order_by(StepTransitionRecord.reached_at.desc(),
                                            StepTransitionRecord.seq.desc())
                                  .limit(limit))).scalars().all()
    truncated = any(len(rows) >= limit
                    for rows in (events, entries, deliveries, scores, tasks, visits))
    items = [*(_event(e) for e in events), *(_step(v) for v in visits),
             *(i for e in entries for i in _entry(e)),
             *(_message(d, feedback.get(d.id, [])) for d in deliveries),
             *(_score(r) for r in scores), *(_task(t) for t in tasks)]
    items.sort(key=_newest_first, reverse=True)
    return ContactTimeline(contact_id=contact_id, items=items[:limit], truncated=truncated
                           or len(items) > limit)


SAME_MOMENT_ORDER = {"event": 0, "entry": 1, "step": 2, "message": 3, "score": 3, "task": 3,
                     "exit": 4}
"""What happens first when a run's clock gives several items the same moment (a run's steps and
actions all carry the journey time of its workflow task): the event, the entry, the steps in
their order, what they did, the exit."""


def _newest_first(item: TimelineItem) -> tuple[datetime, int, int]:
    return item.at, SAME_MOMENT_ORDER[item.kind], int(item.detail.get("seq") or 0)


def _event(e: Event) -> TimelineItem:
    # Names and property names only: property values may be personal (an address, an order).
    return TimelineItem(at=e.timestamp, kind="event", title=f"{e.type} {e.name}",
                        detail={"event_id": e.id, "properties": sorted(e.properties or {})})


def _entry(e: Entry) -> list[TimelineItem]:
    entered = TimelineItem(at=e.entered_at, kind="entry", title=f"entered {e.journey_key}",
                           journey=e.journey_key, workflow_id=e.workflow_id,
                           status=e.outcome or "active",
                           detail={"entry_id": e.id, "version": e.version})
    if e.ended_at is None:
        return [entered]
    return [entered, TimelineItem(
        at=e.ended_at, kind="exit", title=f"left {e.journey_key}: {e.outcome}",
        journey=e.journey_key, workflow_id=e.workflow_id, status=e.outcome, reason=e.reason,
        detail={"entry_id": e.id, "version": e.version})]


def step_left(left_by: str | None, next_step: str | None) -> str:
    """How a visit of a step ended, in words: the route, what it means, and where it led."""
    if left_by is None:
        return "reached, not left yet (waiting there, or the run has not written it yet)"
    if left_by == f"{EXIT_PREFIX}removed":
        return "removed from the journey here"
    if left_by.startswith(EXIT_PREFIX):
        return f"caught here by the exit goal {left_by[len(EXIT_PREFIX):]}"
    meaning = ROUTE_MEANINGS.get(left_by) or (
        "a path of the split" if left_by.startswith("paths[") else None)
    said = f"left by {left_by}" + (f" ({meaning})" if meaning and left_by != "next" else "")
    if next_step and left_by not in ("end", "failed", "holdout"):
        said += " to the end" if next_step == "end" else f" to {next_step}"
    return said


def _step(v: StepTransitionRecord) -> TimelineItem:
    return TimelineItem(
        at=v.reached_at, kind="step", title=f"reached {v.step}", journey=v.journey_key,
        step=v.step, workflow_id=v.workflow_id, status=v.left_by or "here",
        reason=step_left(v.left_by, v.next_step),
        detail={"visit": v.visit, "seq": v.seq, "left_by": v.left_by, "left_at": v.left_at,
                "next_step": v.next_step, "version": v.version})


def _message(d: Delivery, feedback: list[str]) -> TimelineItem:
    what = " ".join(part for part in (d.channel, d.template) if part) or d.kind
    title = f"{d.kind} {what}" if d.kind != "send" else what
    return TimelineItem(at=d.sent_at or d.created_at, kind="message", title=title,
                        journey=d.journey_key, step=d.step, workflow_id=d.workflow_id,
                        status=d.status, reason=why_not_sent(d.status, d.reason),
                        feedback=feedback,
                        detail={"delivery_id": d.id, "channel": d.channel,
                                "provider": d.provider, "category": d.category})


def _score(r: ScoreChangeRecord) -> TimelineItem:
    sign = "+" if r.delta >= 0 else ""
    return TimelineItem(at=r.at, kind="score", title=f"score {r.dimension} {sign}{r.delta} "
                        f"= {r.total}", workflow_id=r.workflow_id, reason=r.reason,
                        detail={"dimension": r.dimension, "delta": r.delta, "total": r.total,
                                "source": r.source})


def _task(t: Task) -> TimelineItem:
    return TimelineItem(at=t.created_at, kind="task", title=f"task in {t.queue}",
                        journey=t.journey_key, step=t.step, workflow_id=t.workflow_id,
                        status=t.status, reason=t.outcome,
                        detail={"task_id": t.id, "queue": t.queue, "assignee": t.assignee})
