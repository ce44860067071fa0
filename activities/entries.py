"""Closing entries: a finished run records its outcome on its entry row(s).

Entry rules (`never`, `after_exit`, `min_interval`) and per-journey counts read these rows, so a
run closes its entry before it completes, and a run that fails closes it as `failed` with the
reason before failing. `close_failed_entries` (run by the hourly segment sweep) closes the entries
of runs that could not: terminated, timed out, or failed outside the interpreter
(`cairn.failed_runs`).
"""

from __future__ import annotations

from temporalio import activity

from activities.context import record_transitions
from cairn.contracts import CLOSE_FAILED_ENTRIES, FINISH_ENTRY, EntryFinish, FailedEntrySweep
from cairn.failed_runs import close_failed_runs
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
            await record_transitions(s, request.context)
            if request.outcome == entries_repo.FAILED:
                closed = await entries_repo.fail_entry(s, request.workflow_id,
                                                       request.reason or "run failed", request.now)
            else:
                closed = await entries_repo.close_entry(s, request.workflow_id, request.outcome,
                                                        request.now)
        bound = log.bind(journey=request.journey_key, contact=request.contact_id,
                         workflow_id=request.workflow_id)
        if closed:
            bound.info("entry.finished", outcome=request.outcome, closed=closed)
        else:
            # A run started outside the router (by hand, or a closed row): nothing to close.
            bound.info("entry.none_open", outcome=request.outcome)

    @activity.defn(name=CLOSE_FAILED_ENTRIES)
    async def close_failed_entries(self, request: FailedEntrySweep) -> int:
        """Ask Temporal about open entries; close those whose run ended badly. Returns how many
        were closed."""
        closed = await close_failed_runs(self.store, activity.client(), now=request.now,
                                         limit=request.limit)
        if closed:
            log.warning("entry.failed_runs_closed", closed=len(closed))
        return len(closed)
