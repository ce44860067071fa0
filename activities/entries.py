"""Closing entries: a finished run records its outcome on its entry row(s).

Entry rules (`never`, `after_exit`, `min_interval`) and per-journey counts read these rows, so a
run closes its entry before it completes.
"""

from __future__ import annotations

from temporalio import activity

from cairn.contracts import FINISH_ENTRY, EntryFinish
from cairn.log import get_logger
from cairn.store import entries as entries_repo
from cairn.store.db import Store

log = get_logger(__name__)


class EntryActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name=FINISH_ENTRY)
    async def finish_entry(self, request: EntryFinish) -> None:
        """Close the open entry row(s) of the run's workflow id with its outcome and time."""
        async with self.store.session() as s, s.begin():
            closed = await entries_repo.close_entry(s, request.workflow_id, request.outcome,
                                                    request.now)
        bound = log.bind(journey=request.journey_key, contact=request.contact_id,
                         workflow_id=request.workflow_id)
        if closed:
            bound.info("entry.finished", outcome=request.outcome, closed=closed)
        else:
            # A run started outside the router (by hand, or a closed row): nothing to close.
            bound.info("entry.none_open", outcome=request.outcome)
