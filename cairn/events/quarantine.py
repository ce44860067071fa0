"""Quarantine: accepted events whose routing kept failing, set aside so they hold nobody back.

`Ingest.route_events` retries a failing event with backoff and, after its last attempt, stamps
it `quarantined_at` with the error. This module lists such events and puts them back in line
after the cause is fixed (a hook repaired, a journey republished): their attempts start from zero
and the relay routes them on its next pass. The API (`/v1/quarantine`) and the CLI
(`cairn quarantine`) both use it.

It does not route anything itself (that is `cairn.events.ingest` and `cairn.events.relay`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from cairn.log import get_logger
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Event

log = get_logger(__name__)


class QuarantinedEvent(BaseModel):
    """A quarantined event: what it was, how often routing failed, and the last error (also
    the API's answer, `starter.api.quarantine`)."""

    model_config = ConfigDict(frozen=True)

    id: int
    message_id: str
    contact_id: str
    event: str
    timestamp: datetime
    received_at: datetime
    attempts: int
    error: str | None
    quarantined_at: datetime

    @classmethod
    def of(cls, row: Event) -> QuarantinedEvent:
        assert row.quarantined_at is not None
        return cls(id=row.id, message_id=row.message_id, contact_id=row.contact_id,
                   event=row.name, timestamp=row.timestamp, received_at=row.received_at,
                   attempts=row.routing_attempts, error=row.routing_error,
                   quarantined_at=row.quarantined_at)


async def quarantined(
    store: Store, *, limit: int = 100, after_id: int = 0
) -> list[QuarantinedEvent]:
    """Quarantined events, oldest first; `after_id` pages on from the last id seen."""
    async with store.session() as session:
        rows = await events_repo.quarantined_events(session, limit=limit, after_id=after_id)
    return [QuarantinedEvent.of(row) for row in rows]


async def release(store: Store, event_ids: Iterable[int] | None = None) -> list[int]:
    """Put quarantined events (all of them with None) back in line; returns the ids released.

    Ids that are not quarantined are ignored. The relay routes the released events on its next
    pass, in order per contact; if they fail again they are retried and quarantined again.
    """
    async with store.session() as session, session.begin():
        released = await events_repo.release_from_quarantine(
            session, None if event_ids is None else list(event_ids))
    if released:
        log.info("quarantine.released", events=len(released), first=released[0])
    return released


__all__ = ["QuarantinedEvent", "quarantined", "release"]
