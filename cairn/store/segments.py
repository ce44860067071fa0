"""Segment memberships: who is in which segment, since when, and when they left.

Membership rows are history: leaving a segment closes the open row, entering again opens a new one.
The segment definitions and their evaluation live elsewhere; this module only records the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import Contact, SegmentMembership


class UnknownContactError(LookupError):
    """A membership for a contact that is not in the store; create the contact first."""


async def active_segments(s: AsyncSession, contact_id: str) -> list[str]:
    """Names of the segments the contact is in now, sorted."""
    rows = await s.scalars(
        select(SegmentMembership.segment)
        .where(SegmentMembership.contact_id == contact_id, SegmentMembership.exited_at.is_(None))
        .distinct()
    )
    return sorted(rows)


async def _lock_contact(s: AsyncSession, contact_id: str) -> None:
    """Serialize membership changes per contact (see `cairn.store.contacts._locked`)."""
    result = await s.execute(
        update(Contact)
        .where(Contact.id == contact_id)
        .values(updated_at=Contact.updated_at)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 1) == 0:
        raise UnknownContactError(
            f"contact {contact_id!r} is not in the store: record an event or identify call for "
            "it before changing its segments"
        )


async def enter_segment(s: AsyncSession, contact_id: str, segment: str, now: datetime) -> bool:
    """Put the contact in a segment; False when it already was (nothing written)."""
    await _lock_contact(s, contact_id)
    if segment in await active_segments(s, contact_id):
        return False
    s.add(SegmentMembership(segment=segment, contact_id=contact_id, entered_at=now))
    await s.flush()
    return True


async def exit_segment(s: AsyncSession, contact_id: str, segment: str, now: datetime) -> bool:
    """Take the contact out of a segment; False when it was not in it."""
    await _lock_contact(s, contact_id)
    result = await s.execute(
        update(SegmentMembership)
        .where(
            SegmentMembership.contact_id == contact_id,
            SegmentMembership.segment == segment,
            SegmentMembership.exited_at.is_(None),
        )
        .values(exited_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def exit_all_segments(
    s: AsyncSession, contact_id: str, now: datetime, *, keep: Iterable[str] = ()
) -> list[str]:
    """Take the contact out of every segment except `keep`; returns the segments left."""
    kept = list(keep)
    left = [name for name in await active_segments(s, contact_id) if name not in kept]
    for name in left:
        await exit_segment(s, contact_id, name, now)
    return left
