"""Identity: folding an anonymous visitor into the user they turned out to be, and erasing a
contact with everything stored about them.

Both move or delete rows of every kind stored per contact (events, deliveries, tasks, scores and
their history, segment memberships, journey entries), which is why they live apart from the
profile reads and writes of `cairn.store.contacts`. Ending the journeys a contact is running is
not done here (the store has no Temporal client): see `starter.api.contacts`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.contacts import locked_contact, mark_seen, writable_contact
from cairn.store.events import erase_events, reattribute_events
from cairn.store.schema import (
    Contact,
    Delivery,
    Entry,
    Score,
    ScoreChangeRecord,
    SegmentMembership,
    Task,
)
from cairn.traits import merge_consent, merge_subscriptions, union


class AliasError(ValueError):
    """An alias that cannot be applied (e.g. an id aliased to itself); the message says why."""


@dataclass(frozen=True)
class AliasResult:
    """What an alias moved from the anonymous id to the user id."""

    contact: Contact
    events: int
    merged_contact: bool


async def alias_contact(
    s: AsyncSession, anonymous_id: str, user_id: str, now: datetime
) -> AliasResult:
    """Fold an anonymous visitor into the user they turned out to be (Segment `alias`).

    The visitor's events, deliveries, tasks, score changes and scores move to the user, so
    `has_done` and scores count what was done before sign-up. Traits merge with the user's
    values winning: the visitor's only fill gaps, push tokens and web push subscriptions are
    added, consent keys the user has not answered are taken over. The visitor's contact row and
    segment memberships go (segments are evaluated again for the user); the user remembers the
    anonymous id, so later calls carrying only that id are the user's
    (`cairn.store.contacts.resolve_contact_id`). Journeys the visitor is running keep their
    anonymous id. Safe to repeat.
    """
    if anonymous_id == user_id:
        raise AliasError(
            f"previousId and userId are both {user_id!r}: an alias links two different ids"
        )
    visitor = await locked_contact(s, anonymous_id)
    user = await writable_contact(s, user_id, now, seen=False)
    events = await reattribute_events(s, anonymous_id, user_id)
    for table in (Delivery, Task, ScoreChangeRecord):
        await s.execute(
            update(table)
            .where(table.contact_id == anonymous_id)
            .values(contact_id=user_id)
            .execution_options(synchronize_session=False)
        )
    # One user per anonymous id: the latest alias wins, so later anonymous events go to it.
    await s.execute(
        update(Contact)
        .where(Contact.anonymous_id == anonymous_id, Contact.id != user_id)
        .values(anonymous_id=None)
        .execution_options(synchronize_session=False)
    )
    if visitor is not None:
        _absorb(user, visitor)
        await _add_scores(s, anonymous_id, user_id, now)
        await s.execute(
            delete(SegmentMembership).where(SegmentMembership.contact_id == anonymous_id)
        )
        await s.delete(visitor)
    user.anonymous_id = anonymous_id
    user.updated_at = now
    await s.flush()
    return AliasResult(contact=user, events=events, merged_contact=visitor is not None)


def _absorb(user: Contact, visitor: Contact) -> None:
    """Merge the visitor's profile into the user's; the user's own values win."""
    for column in ("timezone", "email", "phone"):
        if getattr(user, column) is None:
            setattr(user, column, getattr(visitor, column))
    user.push_tokens = union(user.push_tokens or [], visitor.push_tokens or [])
    user.web_push = merge_subscriptions(visitor.web_push or [], user.web_push or [])
    user.consent = merge_consent(copy.deepcopy(visitor.consent or {}), user.consent or {})
    user.suppressed = union(user.suppressed or [], visitor.suppressed or [])
    user.attributes = {**copy.deepcopy(visitor.attributes or {}), **(user.attributes or {})}
    user.tags = union(user.tags or [], visitor.tags or [])
    for seen in (visitor.first_seen_at, visitor.last_seen_at):
        if seen is not None:
            mark_seen(user, seen)


async def _add_scores(s: AsyncSession, from_id: str, to_id: str, now: datetime) -> None:
    rows = list(await s.scalars(select(Score).where(Score.contact_id == from_id)))
    for row in rows:
        target = await s.get(Score, (to_id, row.dimension))
        if target is None:
            s.add(Score(contact_id=to_id, dimension=row.dimension, total=row.total,
                        updated_at=now))
        else:
            target.total, target.updated_at = target.total + row.total, now
        await s.delete(row)
    await s.flush()


@dataclass(frozen=True)
class Erasure:
    """How many rows of each kind an erasure deleted."""

    contacts: int
    events: int
    deliveries: int
    scores: int
    score_changes: int
    memberships: int
    tasks: int
    entries: int


async def erase_contact(s: AsyncSession, contact_id: str) -> Erasure:
    """Delete everything stored about a contact: profile, events, deliveries, scores and their
    history, segment memberships, tasks and journey entries (right to erasure).

    Ending the contact's running journeys is the caller's job, before this (a journey still
    running could write again); see `starter.api.contacts`.
    """
    columns: dict[str, Any] = {
        "deliveries": Delivery.contact_id, "score_changes": ScoreChangeRecord.contact_id,
        "scores": Score.contact_id, "memberships": SegmentMembership.contact_id,
        "tasks": Task.contact_id, "entries": Entry.contact_id, "contacts": Contact.id,
    }
    counts: dict[str, int] = {}
    for name, column in columns.items():
        result = await s.execute(
            delete(column.class_).where(column == contact_id)
            .execution_options(synchronize_session=False)
        )
        counts[name] = int(getattr(result, "rowcount", 0) or 0)
    counts["events"] = await erase_events(s, contact_id)
    return Erasure(**counts)


__all__ = ["AliasError", "AliasResult", "Erasure", "alias_contact", "erase_contact"]
