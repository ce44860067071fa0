"""The event relay: routes events that were stored but never routed, so no accepted event is lost.

The API answers 202 once an event is committed and routes it afterwards. If Temporal was down, or
the process died between the answer and the routing, the event stays in the store with
`routed_at` empty. The relay, run in the background by `cairn dev` and `cairn api`, picks such
events up and hands them to `Ingest.route_events`, which claims each event before routing it, so
the relay and the API never route the same event at once. Events whose routing keeps failing are
retried with backoff, then quarantined (`cairn quarantine`, `GET /v1/quarantine`); they never stop
the relay.

This module does not decide where an event goes (that is `cairn.events.router`) and does not store
events (that is `cairn.events.ingest`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cairn.events.ingest import ROUTING_LEASE
from cairn.log import get_logger
from cairn.store import events as events_repo

if TYPE_CHECKING:
    from cairn.events.ingest import Ingest
    from cairn.store.db import Store

log = get_logger(__name__)

BATCH_SIZE = 500
"""Events read per query; a pass reads on (by id) until no more are due."""

RELAY_INTERVAL = timedelta(seconds=2)
"""The pause between passes."""

RELAY_GRACE = timedelta(seconds=1)
"""Events younger than this are left to the API that accepted them (it routes them right after
its answer). With the interval, an event a dead API left behind is routed within about 3 s."""


class EventRelay:
    """Routes accepted events that were left unrouted, oldest first.

    Every `interval` it routes the unrouted events older than `grace` that are due (not waiting
    for a retry after a failure, not claimed by a live router, not quarantined); younger ones are
    probably being routed by the API that accepted them right now. Claims make it safe either
    way: an event is routed by one router only. A failing event holds back only its own
    contact's later events (see `Ingest.route_events`); the pass goes on with everyone else's.
    """

    def __init__(
        self,
        ingest: Ingest,
        store: Store,
        *,
        interval: timedelta = RELAY_INTERVAL,
        grace: timedelta = RELAY_GRACE,
    ) -> None:
        self.ingest = ingest
        self.store = store
        self.interval = interval
        self.grace = grace

    async def pass_once(self) -> int:
        """Route what is due now; returns how many events were routed."""
        routed_total = 0
        after_id = 0
        while True:
            now = datetime.now(UTC)
            async with self.store.session() as session:
                due = await events_repo.unrouted_event_ids(
                    session, BATCH_SIZE, now=now, lease=ROUTING_LEASE, after_id=after_id,
                    received_before=now - self.grace if self.grace else None)
            if not due:
                return routed_total
            after_id = due[-1]
            routed = await self.ingest.route_events(due)
            routed_total += len(routed)
            if routed and self.grace:  # a relay behind an API: what it routes was left over
                log.info("relay.routed", routed=len(routed), due=len(due))
            if len(due) < BATCH_SIZE:
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
