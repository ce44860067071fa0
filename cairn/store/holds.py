"""Send holds: a marketing send that quiet hours or a frequency cap made wait, recorded when the
hold starts (the ledger gets the send only when it goes or is skipped).

Not here: deciding a hold (`activities.send`), counting them per message (`cairn.reports`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import SendHold

__all__ = ["HOLD_REASONS", "record_hold"]

HOLD_REASONS = ("quiet_hours", "frequency_cap")


async def record_hold(
    s: AsyncSession, *, idempotency_key: str, reason: str, held_at: datetime, until: datetime,
    workflow_id: str | None, journey_key: str | None, step: str | None,
    contact_id: str | None, template: str | None, variant: str | None, channel: str | None,
) -> bool:
    """Record that the send under `idempotency_key` waits until `until` for `reason`; False
    when this hold is recorded already (a retried plan decides the same hold again)."""
    found = await s.scalar(select(SendHold.id).where(
        SendHold.idempotency_key == idempotency_key, SendHold.until == until))
    if found is not None:
        return False
    s.add(SendHold(idempotency_key=idempotency_key, reason=reason, held_at=held_at,
                   until=until, workflow_id=workflow_id, journey_key=journey_key, step=step,
                   contact_id=contact_id, template=template, variant=variant, channel=channel))
    await s.flush()
    return True
