"""Lead scores per dimension (`global`, per stage, per tag), with the history of every change.

A change carries an idempotency key: the same key twice changes nothing and answers the total
recorded the first time, so a retried activity never scores twice. `change_scores` applies many
keyed changes at once (a sweep's decays): one upsert and one insert for a whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import Score, ScoreChangeRecord

_CHUNK = 1000
"""Rows per multi-row statement: four parameters a row stays far below SQLite's 32,766."""


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


@dataclass(frozen=True)
class ScoreChange:
    """One keyed change for `change_scores`; `reason`, `source` and `at` go into the history."""

    contact_id: str
    dimension: str
    delta: int
    reason: str | None
    source: str | None
    idempotency_key: str
    at: datetime


async def recorded_keys(s: AsyncSession, keys: Iterable[str]) -> set[str]:
    """Which of these idempotency keys the history already holds."""
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        found.update(key for key in await s.scalars(
            select(ScoreChangeRecord.idempotency_key)
            .where(ScoreChangeRecord.idempotency_key.in_(wanted[start:start + _CHUNK]))
        ) if key is not None)
    return found


async def change_scores(s: AsyncSession, changes: Sequence[ScoreChange]) -> dict[str, int]:
    """Apply keyed changes not yet recorded; returns the new total after each one, by key.

    Keys already in the history are skipped (absent from the answer), so a redone batch scores
    nothing twice. On SQLite and PostgreSQL the totals move in one upsert per chunk (`total =
    total + delta`, so a concurrent ingest's increment is never lost) that returns the new totals,
    and the history rows go in one insert; when a concurrent writer records one of the keys first,
    that savepoint is rolled back and the changes are applied one by one with `change_score`.
    """
    recorded = await recorded_keys(s, (c.idempotency_key for c in changes))
    fresh: dict[str, ScoreChange] = {}
    for change in changes:
        if change.idempotency_key not in recorded:
            fresh.setdefault(change.idempotency_key, change)
    if not fresh:
        return {}
    todo = list(fresh.values())
    if _dialect(s) in ("sqlite", "postgresql"):
        try:
            async with s.begin_nested():
                return await _change_in_bulk(s, todo)
        except IntegrityError:
            pass  # a key recorded meanwhile: apply them one by one below, each keyed
    totals: dict[str, int] = {}
    for change in todo:
        if await _recorded_change(s, change.idempotency_key) is not None:
            continue
        totals[change.idempotency_key] = await change_score(
            s, contact_id=change.contact_id, dimension=change.dimension, delta=change.delta,
            reason=change.reason, source=change.source, workflow_id=None,
            idempotency_key=change.idempotency_key, now=change.at,
        )
    return totals


def _dialect(s: AsyncSession) -> str:
    return s.get_bind().dialect.name


async def _change_in_bulk(s: AsyncSession, changes: list[ScoreChange]) -> dict[str, int]:
    """The upsert-and-insert path of `change_scores` (SQLite 3.35+, PostgreSQL)."""
    summed: dict[tuple[str, str], int] = {}
    latest: dict[tuple[str, str], datetime] = {}
    for change in changes:
        cell = (change.contact_id, change.dimension)
        summed[cell] = summed.get(cell, 0) + change.delta
        latest[cell] = max(latest.get(cell, change.at), change.at)
    after: dict[tuple[str, str], int] = {}
    dialect = postgresql if _dialect(s) == "postgresql" else sqlite
    cells = list(summed.items())
    for start in range(0, len(cells), _CHUNK):
        upsert: Any = dialect.insert(Score).values([
            {"contact_id": contact, "dimension": dimension, "total": delta,
             "updated_at": latest[(contact, dimension)]}
            for (contact, dimension), delta in cells[start:start + _CHUNK]
        ])
        upsert = upsert.on_conflict_do_update(
            index_elements=[Score.contact_id, Score.dimension],
            set_={"total": Score.total + upsert.excluded.total,
                  "updated_at": upsert.excluded.updated_at},
        ).returning(Score.contact_id, Score.dimension, Score.total)
        for contact, dimension, total in await s.execute(upsert):
            after[(contact, dimension)] = int(total)
    # Each change's total: the cell's total after the upsert, less the changes that follow it.
    remaining = dict(summed)
    totals: dict[str, int] = {}
    rows = []
    for change in changes:
        cell = (change.contact_id, change.dimension)
        remaining[cell] -= change.delta
        total = after[cell] - remaining[cell]
        totals[change.idempotency_key] = total
        rows.append({
            "idempotency_key": change.idempotency_key, "contact_id": change.contact_id,
            "dimension": change.dimension, "delta": change.delta, "total": total,
            "reason": change.reason, "source": change.source, "workflow_id": None,
            "at": change.at,
        })
    for start in range(0, len(rows), _CHUNK):
        await s.execute(insert(ScoreChangeRecord), rows[start:start + _CHUNK])
    return totals


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
