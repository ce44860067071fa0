"""The rejected-calls store: calls of a batch that were refused while their neighbours were stored.

A Segment or RudderStack library treats any 2xx as delivered and does not retry, so a refused item
of an accepted batch would otherwise vanish. Each is kept here with the endpoint, its index in the
batch, the reason and the call as it arrived (JSON text), for an operator to read and fix at the
source. Nothing here is routed or replayed. Refused calls are kept for `KEPT_FOR`: each write
removes those older (the table stays bounded by what a month of refusals holds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import RejectedCall

KEPT_FOR = timedelta(days=30)
"""How long a refused call is kept."""

MAX_KEPT_CHARS = 64 * 1024
"""The longest call text kept; a longer one (only possible past the per-call limit) is cut."""


@dataclass(frozen=True)
class Refusal:
    """One refused call: where it was in its batch, why, and the call as received."""

    index: int | None
    reason: str
    call: Any
    message_id: str | None = None


def call_text(call: Any) -> str:
    """The call as JSON text any database stores: non-ASCII escaped (so lone surrogates stay
    readable as `\\ud800`), NaN written as NaN, cut at `MAX_KEPT_CHARS`."""
    text = json.dumps(call, ensure_ascii=True, default=repr)
    return text if len(text) <= MAX_KEPT_CHARS else text[:MAX_KEPT_CHARS]


async def record_refusals(
    s: AsyncSession, refusals: Sequence[Refusal], *, endpoint: str, received_at: datetime,
) -> None:
    """Keep the refused calls of one request (and forget those older than `KEPT_FOR`)."""
    rows = [
        {"endpoint": endpoint, "batch_index": refusal.index,
         "message_id": _message_id(refusal.message_id), "reason": refusal.reason,
         "call": call_text(refusal.call), "received_at": received_at}
        for refusal in refusals
    ]
    if rows:
        await s.execute(insert(RejectedCall), rows)
        await s.execute(delete(RejectedCall)
                        .where(RejectedCall.received_at < received_at - KEPT_FOR))


def _message_id(value: str | None) -> str | None:
    if value is None:
        return None
    safe = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe[:255]


async def latest_rejected(
    s: AsyncSession, *, limit: int = 50, endpoint: str | None = None
) -> list[RejectedCall]:
    """The latest refused calls, newest first; `endpoint` keeps one endpoint's."""
    query = select(RejectedCall).order_by(RejectedCall.id.desc()).limit(limit)
    if endpoint is not None:
        query = query.where(RejectedCall.endpoint == endpoint)
    return list(await s.scalars(query))


__all__ = ["Refusal", "RejectedCall", "call_text", "erase_rejected_of", "latest_rejected",
           "record_refusals"]


async def erase_rejected_of(s: AsyncSession, contact_id: str) -> int:
    """Delete the refused calls made for a contact (erasure): those whose kept JSON names it as
    `userId`, `anonymousId` or `previousId`; returns how many."""
    quoted = json.dumps(contact_id, ensure_ascii=True)
    named = [RejectedCall.call.contains(f'"{field}": {quoted}', autoescape=True)
             for field in ("userId", "anonymousId", "previousId")]
    deleted = await s.execute(
        delete(RejectedCall).where(or_(*named)).execution_options(synchronize_session=False))
    return int(getattr(deleted, "rowcount", 0) or 0)
