"""The data keys table: find a contact's (or the system's) wrapped data key, add one, destroy one.

The keys themselves are wrapped by a master key before they reach this table
(`cairn.privacy.keys`); this module only stores and finds rows. Destroying a key (erasure) drops
the wrapped bytes and unties the row from its owner, keeping the id so a later decode can say that
the key was erased rather than never known.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.db import insert_once
from cairn.store.schema import DataKey, ErasureRecord


async def data_key_by_id(s: AsyncSession, key_id: str) -> DataKey | None:
    return await s.get(DataKey, key_id)


async def data_key_of(s: AsyncSession, owner: str) -> DataKey | None:
    """The live key of `owner` ("contact:<id>" or "system"), if it has one."""
    return (await s.execute(select(DataKey).where(DataKey.owner == owner))).scalar_one_or_none()


async def add_data_key(s: AsyncSession, row: DataKey) -> DataKey:
    """Store `row`, or return the key another process stored for the same owner meanwhile.

    One `INSERT ... ON CONFLICT (owner) DO NOTHING RETURNING` (no savepoint, no lookup first:
    the caller looked the owner up just before); the owner's row is read only when another
    writer stored it first."""
    dialect = postgresql if s.bind is not None and s.bind.dialect.name == "postgresql" else sqlite
    table = DataKey.__table__
    values = {column.key: getattr(row, column.key) for column in table.columns}
    inserted = await s.scalar(dialect.insert(table).values(**values)
                              .on_conflict_do_nothing(index_elements=["owner"])
                              .returning(table.c.id))
    if inserted is not None:
        return row
    stored = await data_key_of(s, row.owner)
    if stored is None:  # the owner's key was destroyed meanwhile: store this one as usual
        stored, _ = await insert_once(s, row, lambda: data_key_of(s, row.owner))
    return stored


async def destroy_data_key(s: AsyncSession, owner: str, now: datetime) -> str | None:
    """Destroy the live key of `owner`; returns its id (None if it had none)."""
    row = await data_key_of(s, owner)
    if row is None:
        return None
    await s.execute(
        update(DataKey).where(DataKey.id == row.id)
        .values(wrapped=None, master_key_id=None, owner=f"erased:{row.id}", destroyed_at=now)
        .execution_options(synchronize_session=False)
    )
    return row.id


async def erasure_mark(s: AsyncSession) -> int:
    """The newest erasure's number (0 before any): when it moves, some data key was destroyed.
    One lookup at the end of the primary key, however many erasures there were."""
    return int(await s.scalar(select(func.max(ErasureRecord.id))) or 0)


async def wrapped_data_keys(s: AsyncSession, *, not_under: str, limit: int) -> list[DataKey]:
    """Live keys wrapped by a master key other than `not_under` (what a rewrap must visit)."""
    rows = await s.execute(
        select(DataKey).where(DataKey.wrapped.is_not(None), DataKey.master_key_id != not_under)
        .order_by(DataKey.id).limit(limit)
    )
    return list(rows.scalars())


__all__ = ["add_data_key", "data_key_by_id", "data_key_of", "destroy_data_key",
           "erasure_mark", "wrapped_data_keys"]
