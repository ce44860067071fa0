"""Segment memberships: who is in which segment, since when, and when they left.

Membership rows are history: leaving a segment closes the open row, entering again opens a new one.
The segment definitions and their evaluation live elsewhere; this module only records the outcome.
The batch functions (`lock_contacts`, `open_memberships`, `record_changes`) do the same for many
contacts in a few statements: the segment sweep decides hundreds of contacts at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import Contact, SegmentMembership

_CHUNK = 1000
"""Ids per `IN (...)` list: far below SQLite's limit of 32,766 parameters a statement."""


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
    """Serialize membership changes per contact (see `cairn.store.contacts.locked_contact`)."""
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


# --------------------------------------------------------------------------- batches


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start:start + _CHUNK])


async def lock_contacts(s: AsyncSession, contact_ids: Iterable[str]) -> None:
    """Take the write lock of many contacts at once, as `_lock_contact` does for one.

    One statement per chunk of sorted ids: PostgreSQL's primary-key index scan visits (and
    locks) them in id order, so two batch writers over the same contacts queue rather than
    deadlock; SQLite takes its one write lock. A contact no longer in the store is skipped
    (erased since the caller read it).
    """
    for chunk in _chunks(sorted(set(contact_ids))):
        await s.execute(
            update(Contact)
            .where(Contact.id.in_(chunk))
            .values(updated_at=Contact.updated_at)
            .execution_options(synchronize_session=False)
        )


async def open_memberships(s: AsyncSession, contact_ids: Sequence[str]) -> dict[str, list[str]]:
    """The segments each contact is in now (sorted), for many contacts in one query a chunk."""
    found: dict[str, set[str]] = {contact_id: set() for contact_id in contact_ids}
    for chunk in _chunks(contact_ids):
        for contact_id, segment in await s.execute(
            select(SegmentMembership.contact_id, SegmentMembership.segment).where(
                SegmentMembership.contact_id.in_(chunk), SegmentMembership.exited_at.is_(None))
        ):
            found.setdefault(contact_id, set()).add(segment)
    return {contact_id: sorted(segments) for contact_id, segments in found.items()}


async def record_changes(
    s: AsyncSession,
    entered: Sequence[tuple[str, str, datetime]],
    exited: Sequence[tuple[str, str, datetime]],
) -> None:
    """Open a membership per (contact, segment, at) entered; close the open ones of those exited.

    The caller holds the contacts' locks (`lock_contacts`) and decided on memberships read under
    them, so every entry is new and every exit closes a row: one insert and one executemany
    update, however many contacts changed.
    """
    if entered:
        await s.execute(insert(SegmentMembership), [
            {"contact_id": contact_id, "segment": segment, "entered_at": at, "exited_at": None}
            for contact_id, segment, at in entered
        ])
    if exited:
        table = SegmentMembership.__table__
        assert isinstance(table, Table)
        await s.execute(
            update(table)
            .where(table.c.contact_id == bindparam("contact"),
                   table.c.segment == bindparam("name"),
                   table.c.exited_at.is_(None))
            .values(exited_at=bindparam("left_at")),
            [{"contact": contact_id, "name": segment, "left_at": at}
             for contact_id, segment, at in exited],
        )
