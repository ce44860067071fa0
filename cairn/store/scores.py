"""Lead scores per dimension (`global`, per stage, per tag), with the history of every change.

A change carries an idempotency key: the same key twice changes nothing and answers the total
recorded the first time, so a retried activity never scores twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import Score, ScoreChangeRecord


async def _recorded_change(s: AsyncSession, idempotency_key: str) -> ScoreChangeRecord | None:
    return await s.scalar(
        select(ScoreChangeRecord).where(ScoreChangeRecord.idempotency_key == idempotency_key)
    )


async def _add(s: AsyncSession, contact_id: str, dimension: str, delta: int,
               now: datetime) -> int:
    """Add to the running total in the database (no read-modify-write) and return the total."""
    increment = (
        update(Score)
        .where(Score.contact_id == contact_id, Score.dimension == dimension)
        .values(total=Score.total + delta, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    result = await s.execute(increment)
    if not getattr(result, "rowcount", 0):
        try:
            async with s.begin_nested():
                s.add(Score(contact_id=contact_id, dimension=dimension, total=delta,
                            updated_at=now))
                await s.flush()
        except IntegrityError:
            await s.execute(increment)  # another writer created the row first
    total = await s.scalar(
        select(Score.total)
        .where(Score.contact_id == contact_id, Score.dimension == dimension)
    )
    return int(total or 0)


async def change_score(
    s: AsyncSession,
    *,
    contact_id: str,
    dimension: str,
    delta: int,
    reason: str | None,
    source: str | None,
    workflow_id: str | None,
    idempotency_key: str | None,
    now: datetime,
) -> int:
    """Add `delta` to a dimension and record why; returns the new total.

    The total and its history row are written in one savepoint: when a concurrent change with the
    same key wins, this one's increment is rolled back with its history row.
    """
    if idempotency_key is not None:
        recorded = await _recorded_change(s, idempotency_key)
        if recorded is not None:
            return recorded.total
    try:
        async with s.begin_nested():
            total = await _add(s, contact_id, dimension, delta, now)
            s.add(ScoreChangeRecord(
                idempotency_key=idempotency_key, contact_id=contact_id, dimension=dimension,
                delta=delta, total=total, reason=reason, source=source,
                workflow_id=workflow_id, at=now,
            ))
            await s.flush()
    except IntegrityError:
        if idempotency_key is None:
            raise
        recorded = await _recorded_change(s, idempotency_key)
        if recorded is None:
            raise
        return recorded.total
    return total


async def scores_of(s: AsyncSession, contact_id: str) -> dict[str, int]:
    """Every dimension's total for a contact."""
    rows = await s.execute(
        select(Score.dimension, Score.total).where(Score.contact_id == contact_id)
    )
    return {dimension: int(total) for dimension, total in rows}


async def score_history(
    s: AsyncSession, *, workflow_id: str | None = None, contact_id: str | None = None
) -> list[ScoreChangeRecord]:
    """Score changes in the order they happened, for a journey run and/or a contact."""
    query = select(ScoreChangeRecord).order_by(ScoreChangeRecord.id)
    if workflow_id is not None:
        query = query.where(ScoreChangeRecord.workflow_id == workflow_id)
    if contact_id is not None:
        query = query.where(ScoreChangeRecord.contact_id == contact_id)
    return list(await s.scalars(query))
