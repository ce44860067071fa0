"""Failed runs: close the entries of journey runs that ended without closing them.

A run that completes closes its own entry (`finish_entry`). A run that fails after catching its
own error closes it too (as `failed`, from the interpreter). But a workflow cannot run code once
it is terminated, times out or fails outside the interpreter's reach, so its entry would stay open
for ever: `cairn journeys` would count a contact who is not there, and entry rules would see an
entry the contact never finished. `close_failed_runs` asks Temporal about the open entries and
closes those whose run is closed as failed, terminated, timed out or cancelled, with the reason.
The hourly segment sweep runs it (the `close_failed_entries` activity); `cairn entries --sweep`
runs it on demand.

Which run is the entry's: the router starts each run with the message id of its trigger in the
memo (`cairn_trigger`). A closed run whose memo names another trigger belongs to an earlier entry
(the router may be starting this entry's run right now), so the entry is left alone.

Not here: what a failed entry means for the entry rules (`cairn.store.entries`), re-entering one
(`cairn.reentry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from cairn.events.router import TRIGGER_MEMO
from cairn.log import get_logger
from cairn.store import entries as entries_repo
from cairn.store.db import Store
from cairn.store.schema import Entry

log = get_logger(__name__)

FAILED_STATUSES = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
    WorkflowExecutionStatus.CANCELED: "cancelled",
}


@dataclass(frozen=True)
class ClosedRun:
    entry_id: int
    workflow_id: str
    journey_key: str
    contact_id: str
    reason: str


async def close_failed_runs(
    store: Store, client: Client, *, now: datetime, limit: int = 500,
) -> list[ClosedRun]:
    """Close as failed every open entry (up to `limit`, oldest first) whose run is closed
    without having closed it; returns what was closed."""
    async with store.session() as s:
        candidates = await entries_repo.open_entries_before(s, now, limit)
    closed: list[ClosedRun] = []
    for entry in candidates:
        reason = await _failure_of(client, entry)
        if reason is None:
            continue
        async with store.session() as s, s.begin():
            count = await entries_repo.fail_entry(s, entry.workflow_id, reason, now)
        if count:
            log.warning("entry.failed_run", journey=entry.journey_key, contact=entry.contact_id,
                        workflow_id=entry.workflow_id, reason=reason)
            closed.append(ClosedRun(entry.id, entry.workflow_id, entry.journey_key,
                                    entry.contact_id, reason))
    return closed


async def _failure_of(client: Client, entry: Entry) -> str | None:
    """Why the entry's run ended badly, or None while it runs, ended well, is not there or is
    another entry's run."""
    handle = client.get_workflow_handle(entry.workflow_id)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None  # not started yet, or removed by retention: the relay re-drives it
        raise
    status = description.status
    if status not in FAILED_STATUSES:
        return None
    memo = await description.memo()
    trigger = memo.get(TRIGGER_MEMO)
    if trigger is not None and entry.trigger_message_id is not None \
            and trigger != entry.trigger_message_id:
        return None
    detail = ""
    try:
        await client.get_workflow_handle(entry.workflow_id, run_id=description.run_id).result(
            follow_runs=False)
    except WorkflowFailureError as error:
        detail = str(error.cause or error)
    except Exception as error:  # the reason is a courtesy; the status already decides
        detail = type(error).__name__
    label = FAILED_STATUSES[status]
    return f"run {label}: {detail}" if detail else f"run {label}"
