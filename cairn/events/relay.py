"""The event relay: routes events that were stored but never routed, so no accepted event is lost.

The API answers 202 once an event is committed and routes it afterwards. If Temporal was down, or
the process died between the answer and the routing, the event stays in the store with
`routed_at` empty. The relay, run in the background by `cairn dev` and `cairn api`, picks such
events up and hands them to `Ingest.route_events`. Routing an event twice is safe: the router keys
entries by the trigger's message id and journeys ignore message ids they have seen.

This module does not decide where an event goes (that is `cairn.events.router`) and does not store
events (that is `cairn.events.ingest`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cairn.log import get_logger
from cairn.store import events as events_repo
from cairn.store.schema import as_utc

if TYPE_CHECKING:
    from cairn.events.ingest import Ingest
    from cairn.store.db import Store

log = get_logger(__name__)

BATCH_SIZE = 500
"""Events read per query; a pass keeps reading batches while whole batches get routed."""


class EventRelay:
    """Routes accepted events that were left unrouted, oldest first.

    Every `interval` it routes the unrouted events older than `grace`; younger ones are probably
    being routed by the API that accepted them right now (routing them twice would be harmless,
    only wasteful). A routing failure stops the pass at that event, so a contact's later events
    never overtake an earlier one; the next pass tries again.
    """

    def __init__(
        self,
        ingest: Ingest,
        store: Store,
        *,
        interval: timedelta = timedelta(seconds=5),
        grace: timedelta = timedelta(seconds=10),
    ) -> None:
        self.ingest = ingest
        self.store = store
        self.interval = interval
        self.grace = grace

    async def pass_once(self) -> int:
        """Route what is due now; returns how many events were routed."""
        routed_total = 0
        while True:
            async with self.store.session() as session:
                rows = await events_repo.unrouted_events(session, limit=BATCH_SIZE)
            cutoff = datetime.now(UTC) - self.grace
            due = [row.id for row in rows if (as_utc(row.received_at) or cutoff) <= cutoff]
            if not due:
                return routed_total
            routed = await self.ingest.route_events(due)
            routed_total += len(routed)
            log.info("relay.routed", routed=len(routed), due=len(due))
            if len(routed) < len(due) or len(rows) < BATCH_SIZE:
                return routed_total

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass is logged and retried next time."""
        while True:
            await asyncio.sleep(self.interval.total_seconds())
            try:
                await self.pass_once()
            except Exception as error:  # the store is unreachable: try again next interval
                log.warning("relay.failed", error=str(error), error_type=type(error).__name__)


@contextlib.asynccontextmanager
async def relaying(relay: EventRelay) -> AsyncIterator[EventRelay]:
    """Run the relay in the background while the block runs; stop it when the block ends."""
    task = asyncio.create_task(relay.run(), name="cairn-relay")
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
