"""Entries: one row per contact entering a journey. Entry rules read them; runs close them.

A row is open (`ended_at` empty) while its workflow runs; `finish_entry` closes it with the
outcome (`converted`, `completed`, `ended:<outcome>`, ...). Per-journey counts come from here.

A run that fails, is terminated or times out closes its row as `failed` with the `reason`
(`cairn.failed_runs`). A failed entry does not count for the entry rules (`reentry: never`,
`min_interval`, `after_exit`; see `counts_for_entry_rules`): the contact did not get the journey,
so a broken run must not lock them out of it. An operator re-enters a failed entry after a fix;
the row then says `failed:reentered` and leaves the list of failed entries.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import Entry

FAILED = "failed"
"""The outcome of an entry whose run failed, was terminated or timed out."""
REENTERED = "failed:reentered"
"""The outcome of a failed entry an operator re-entered (the new entry is its own row)."""


def counts_for_entry_rules(entry: Entry) -> bool:
    """Whether the entry rules count this entry: a failed run's entry does not."""
    return not (entry.outcome or "").startswith(FAILED)


async def record_entry(
    s: AsyncSession,
    *,
    journey_key: str,
    version: int,
    contact_id: str,
    entry_key: str | None,
    workflow_id: str,
    trigger_message_id: str | None,
    entered_at: datetime,
) -> Entry:
    row = Entry(
        journey_key=journey_key,
        version=version,
        contact_id=contact_id,
        entry_key=entry_key,
        workflow_id=workflow_id,
        trigger_message_id=trigger_message_id,
        entered_at=entered_at,
    )
    s.add(row)
    await s.flush()
    return row


async def last_entry(
    s: AsyncSession, journey_key: str, contact_id: str, entry_key: str | None = None
) -> Entry | None:
    """The contact's most recent entry into a journey (for one entry key when given)."""
    query = select(Entry).where(Entry.journey_key == journey_key, Entry.contact_id == contact_id)
    if entry_key is not None:
        query = query.where(Entry.entry_key == entry_key)
    return await s.scalar(query.order_by(Entry.entered_at.desc(), Entry.id.desc()).limit(1))


async def open_entries(
    s: AsyncSession, journey_key: str | None = None, contact_id: str | None = None,
    *, limit: int | None = None,
) -> list[Entry]:
    """Entries whose run has not finished, oldest first (the first `limit` when given)."""
    query = select(Entry).where(Entry.ended_at.is_(None)).order_by(Entry.id)
    if journey_key is not None:
        query = query.where(Entry.journey_key == journey_key)
    if contact_id is not None:
        query = query.where(Entry.contact_id == contact_id)
    if limit is not None:
        query = query.limit(limit)
    return list(await s.scalars(query))


async def open_entry_counts(s: AsyncSession) -> dict[str, int]:
    """Open entries per journey key, counted by the database."""
    query = (select(Entry.journey_key, func.count()).where(Entry.ended_at.is_(None))
             .group_by(Entry.journey_key))
    return {key: count for key, count in (await s.execute(query)).all()}


async def close_entry(s: AsyncSession, workflow_id: str, outcome: str, now: datetime) -> int:
    """Close the open entry row(s) of a workflow id; returns how many were open."""
    result = await s.execute(
        update(Entry)
        .where(Entry.workflow_id == workflow_id, Entry.ended_at.is_(None))
        .values(ended_at=now, outcome=outcome)
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def entries_for(
    s: AsyncSession, journey_key: str | None = None, contact_id: str | None = None
) -> list[Entry]:
    """Every entry, open or closed, oldest first."""
    query = select(Entry).order_by(Entry.id)
    if journey_key is not None:
        query = query.where(Entry.journey_key == journey_key)
    if contact_id is not None:
        query = query.where(Entry.contact_id == contact_id)
    return list(await s.scalars(query))


async def entries_for_contacts(
    s: AsyncSession, journey_key: str, contact_ids: list[str]
) -> dict[str, list[Entry]]:
    """Every entry of these contacts into one journey, oldest first, by contact (a batch of
    contacts entering together reads its entry rules' history at once)."""
    found: dict[str, list[Entry]] = {}
    for start in range(0, len(contact_ids), 500):
        query = (select(Entry).where(Entry.journey_key == journey_key,
                                     Entry.contact_id.in_(contact_ids[start:start + 500]))
                 .order_by(Entry.id))
        for row in await s.scalars(query):
            found.setdefault(row.contact_id, []).append(row)
    return found


async def fail_entry(s: AsyncSession, workflow_id: str, reason: str, now: datetime) -> int:
    """Close the open entry row(s) of a workflow id as failed, with why; returns how many."""
    result = await s.execute(
        update(Entry)
        .where(Entry.workflow_id == workflow_id, Entry.ended_at.is_(None))
        .values(ended_at=now, outcome=FAILED, reason=reason[:2000])
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def get_entry(s: AsyncSession, entry_id: int) -> Entry | None:
    return await s.get(Entry, entry_id)


async def failed_entries(
    s: AsyncSession, journey_key: str | None = None, limit: int = 100,
) -> list[Entry]:
    """Entries whose run failed and that no operator re-entered yet, newest first."""
    query = select(Entry).where(Entry.outcome == FAILED).order_by(Entry.id.desc()).limit(limit)
    if journey_key is not None:
        query = query.where(Entry.journey_key == journey_key)
    return list(await s.scalars(query))


async def mark_reentered(s: AsyncSession, entry_id: int) -> None:
    await s.execute(update(Entry).where(Entry.id == entry_id, Entry.outcome == FAILED)
                    .values(outcome=REENTERED))


async def open_entries_before(s: AsyncSession, before: datetime, limit: int) -> list[Entry]:
    """Open entries recorded before `before` (by entry time), oldest first: those whose run
    may have ended without closing them."""
    query = (select(Entry).where(Entry.ended_at.is_(None), Entry.entered_at < before)
             .order_by(Entry.id).limit(limit))
    return list(await s.scalars(query))

