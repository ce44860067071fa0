"""The deliveries ledger: every send decision and every action toward the outside world.

Each row carries a unique idempotency key `<workflow id>/<step>/<iteration>`; recording the same
key twice returns the first row, which is how a retried activity finds its earlier send instead of
sending again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.db import insert_once
from cairn.store.schema import Delivery

__all__ = ["Delivery", "deliveries_for", "find_delivery", "outbox", "record_delivery",
           "unconfirmed_sends"]


async def find_delivery(s: AsyncSession, idempotency_key: str) -> Delivery | None:
    return await s.scalar(select(Delivery).where(Delivery.idempotency_key == idempotency_key))


async def record_delivery(s: AsyncSession, *, known_absent: bool = False,
                          **fields: Any) -> tuple[Delivery, bool]:
    """Record a delivery by its idempotency key: (row, True), or (the earlier row, False).

    `known_absent`: the caller looked the key up in this transaction and found nothing (the
    lookup is not repeated; a concurrent writer is still caught, see `insert_once`)."""
    key = fields.get("idempotency_key")
    if not key:
        raise ValueError("a delivery needs an idempotency_key (<workflow id>/<step>/<iteration>)")
    return await insert_once(s, Delivery(**fields), lambda: find_delivery(s, key),
                             known_absent=known_absent)


async def deliveries_for(
    s: AsyncSession,
    *,
    workflow_id: str | None = None,
    contact_id: str | None = None,
    kind: str | None = None,
) -> list[Delivery]:
    """Ledger rows in the order they were recorded, filtered by run, contact and kind."""
    query = select(Delivery).order_by(Delivery.id)
    if workflow_id is not None:
        query = query.where(Delivery.workflow_id == workflow_id)
    if contact_id is not None:
        query = query.where(Delivery.contact_id == contact_id)
    if kind is not None:
        query = query.where(Delivery.kind == kind)
    return list(await s.scalars(query))


async def outbox(s: AsyncSession, limit: int = 50, status: str | None = None) -> list[Delivery]:
    """The latest ledger rows, newest first: what Cairn sent, skipped or recorded lately (with
    one `status` only, when given: `unconfirmed` lists the sends whose outcome is unknown)."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Delivery.status == status)
    return list(await s.scalars(query))


async def unconfirmed_sends(s: AsyncSession, limit: int = 200) -> list[Delivery]:
    """Sends whose provider call was interrupted and whose outcome is still unknown, oldest
    first."""
    query = (select(Delivery).where(Delivery.kind == "send", Delivery.status == "unconfirmed")
             .order_by(Delivery.id).limit(limit))
    return list(await s.scalars(query))
