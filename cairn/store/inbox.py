"""In-app and on-site messages: what a contact's inbox shows until read or dismissed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.db import insert_once
from cairn.store.schema import InboxMessage

__all__ = ["InboxMessage", "find_message", "inbox_of", "mark", "put_message"]


async def put_message(
    s: AsyncSession, *, delivery_key: str, contact_id: str, channel: str, parts: dict[str, Any],
    created_at: datetime, journey_key: str | None = None, template: str | None = None,
) -> tuple[InboxMessage, bool]:
    """Place a message once per delivery key: a retried send finds the message it placed."""
    row = InboxMessage(
        delivery_key=delivery_key, contact_id=contact_id, channel=channel, parts=parts,
        created_at=created_at, journey_key=journey_key, template=template,
    )
    return await insert_once(
        s, row,
        lambda: s.scalar(select(InboxMessage).where(InboxMessage.delivery_key == delivery_key)),
    )


async def inbox_of(
    s: AsyncSession, contact_id: str, *, channel: str | None = None,
    include_dismissed: bool = False, limit: int = 50,
) -> list[InboxMessage]:
    """The contact's messages, newest first; dismissed ones only when asked."""
    query = select(InboxMessage).where(InboxMessage.contact_id == contact_id)
    if channel is not None:
        query = query.where(InboxMessage.channel == channel)
    if not include_dismissed:
        query = query.where(InboxMessage.dismissed_at.is_(None))
    query = query.order_by(InboxMessage.id.desc()).limit(limit)
    return list(await s.scalars(query))


async def find_message(s: AsyncSession, contact_id: str, message_id: int) -> InboxMessage | None:
    return await s.scalar(
        select(InboxMessage).where(InboxMessage.id == message_id,
                                   InboxMessage.contact_id == contact_id)
    )


async def mark(row: InboxMessage, action: str, when: datetime) -> bool:
    """Set read or dismissed; False when it already was (a repeated click is not news)."""
    if action == "read":
        if row.read_at is not None:
            return False
        row.read_at = when
        return True
    if row.dismissed_at is not None:
        return False
    row.dismissed_at = when
    if row.read_at is None:
        row.read_at = when
    return True
