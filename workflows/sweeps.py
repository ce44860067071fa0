"""Sweeps: workflows that walk every contact in batches for what time alone changes.

Three kinds, each a loop of one activity per batch of contact ids, with keyset pagination (the last
contact id of a batch is the cursor of the next) carried in the workflow state:

- `SegmentSweepWorkflow` re-decides time-based segments (inactive for 30 days) for everyone, and
  applies the inactivity decays of the scoring rules (-10 after 7 days without login); at the
  end it closes the entries of journey runs that ended without closing them (terminated, timed
  out: `close_failed_entries`) and asks the providers about unconfirmed sends
  (`settle_unconfirmed`), so hourly at the latest;
- `DateAttributeSweepWorkflow` emits `date_attribute_reached` for contacts whose date attribute
  (shifted by the trigger's offset, yearly for birthdays) falls on today in their own time zone;
- `ScheduledEntryWorkflow` emits `schedule_fired` for every member of a `schedule` trigger's
  segment (or every contact) at one occurrence of its cron.

The cursor lives in the state, so after a crash (worker or activity) the sweep resumes at the
batch it was on; the activities are idempotent per batch (deterministic message ids), so redoing a
batch emits nothing twice. A run continues as new every `batches_per_run` batches (or when Temporal
suggests it), passing its whole state, so a sweep over millions of contacts keeps a small history.
The moment a sweep judges (`now`) is fixed when it starts and kept across runs: every batch judges
the same instant. The batch work itself (stores, segments, routing) is in `activities/sweeps.py`;
the contracts both sides share are in `cairn/sweeps.py`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from cairn.contracts import (
        CLOSE_FAILED_ENTRIES,
        SETTLE_UNCONFIRMED,
        FailedEntrySweep,
        UnconfirmedSweep,
    )
    from cairn.sweeps import (
        DATE_SWEEP_WORKFLOW,
        ENTER_IMPORTED,
        ENTER_SCHEDULED,
        IMPORT_ENTRY_WORKFLOW,
        PLAN_IMPORTED,
        PLAN_SCHEDULED,
        SCHEDULED_ENTRY_WORKFLOW,
        SEGMENT_SWEEP_WORKFLOW,
        SWEEP_DATE_ATTRIBUTES,
        SWEEP_SEGMENTS,
        ImportInput,
        ScheduleInput,
        SweepBatch,
        SweepBatchResult,
        SweepInput,
        SweepResult,
    )

from workflows.run import ACTIVITY_RETRY

BATCH_TIMEOUT = timedelta(minutes=10)
"""One batch (1,000 contacts decided, its events routed) takes seconds; the margin covers a slow
database, and a batch that really hangs is retried from its cursor."""

CLOSE_FAILED_ENTRIES_PATCH = "segment-sweep-closes-failed-entries"
"""Sweeps started before the segment sweep closed failed entries and settled unconfirmed sends
replay without those calls."""

UPKEEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=3)

SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
"""Set by Temporal on runs a Schedule starts: the occurrence, even when the start was late."""


async def _sweep(activity: str, data: SweepInput, batch: SweepBatch) -> SweepResult:
    """The loop every sweep shares: a batch at a time from the cursor, continue-as-new on quota."""
    config = data.config
    in_this_run = 0
    while True:
        batch.after = data.cursor
        result: SweepBatchResult = await workflow.execute_activity(
            activity,
            batch,
            result_type=SweepBatchResult,
            start_to_close_timeout=BATCH_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=f"batch {data.batches + 1} after {data.cursor or 'the first contact'}",
        )
        data.batches += 1
        data.contacts += result.contacts
        data.emitted += result.emitted
        data.cursor = result.last or data.cursor
        in_this_run += 1
        workflow.set_current_details(
            f"{data.contacts} contacts in {data.batches} batches; {data.emitted} events emitted"
        )
        if result.finished(config.batch_size):
            return SweepResult(contacts=data.contacts, batches=data.batches,
                               emitted=data.emitted, runs=data.runs)
        if in_this_run >= config.batches_per_run or workflow.info().is_continue_as_new_suggested():
            data.runs += 1
            workflow.continue_as_new(data)


def _started(data: SweepInput) -> tuple[datetime, str]:
    """The moment judged and the id prefix, fixed by the first run and carried by later ones."""
    now = data.now or workflow.now()
    sweep_id = data.sweep_id or workflow.info().workflow_id
    data.now, data.sweep_id = now, sweep_id
    return now, sweep_id


@workflow.defn(name=SEGMENT_SWEEP_WORKFLOW)
class SegmentSweepWorkflow:
    """Re-decide the time-based segments of every contact and apply due inactivity decays;
    entries, exits and threshold crossings emit events."""

    @workflow.run
    async def run(self, data: SweepInput) -> SweepResult:
        now, sweep_id = _started(data)
        batch = SweepBatch(config=data.config, now=now, sweep_id=sweep_id)
        result = await _sweep(SWEEP_SEGMENTS, data, batch)
        if workflow.patched(CLOSE_FAILED_ENTRIES_PATCH):
            await _upkeep(CLOSE_FAILED_ENTRIES, FailedEntrySweep(now=now),
                          "close the entries of runs that failed, were terminated or timed out")
            await _upkeep(SETTLE_UNCONFIRMED, UnconfirmedSweep(),
                          "ask the providers about sends whose outcome is unknown")
        return result


async def _upkeep(activity: str, request: object, summary: str) -> None:
    """One upkeep call after the sweep proper. It repeats every hour, so a failure is logged and
    left to the next sweep rather than failing a sweep whose segments are done."""
    try:
        await workflow.execute_activity(
            activity,
            request,
            result_type=int,
            start_to_close_timeout=BATCH_TIMEOUT,
            retry_policy=UPKEEP_RETRY,
            summary=summary,
        )
    except ActivityError as error:
        workflow.logger.warning("sweep upkeep %s failed: %s", activity, error.cause or error)


@workflow.defn(name=DATE_SWEEP_WORKFLOW)
class DateAttributeSweepWorkflow:
    """Emit `date_attribute_reached` for every contact whose date trigger falls due now.

    Runs hourly (see `starter.schedules`): each run emits for contacts whose local due moment
    (date + offset at the trigger's local time) passed within the last day, so a contact is
    reached within the hour of its local time whatever its zone; message ids per (journey,
    contact, date) make the later runs of the same day emit nothing again.
    """

    @workflow.run
    async def run(self, data: SweepInput) -> SweepResult:
        now, sweep_id = _started(data)
        batch = SweepBatch(config=data.config, now=now, sweep_id=sweep_id)
        return await _sweep(SWEEP_DATE_ATTRIBUTES, data, batch)


@workflow.defn(name=SCHEDULED_ENTRY_WORKFLOW)
class ScheduledEntryWorkflow:
    """One occurrence of a `schedule` trigger: every member of its segment enters, once.

    The batches run side by side (`config.parallel_batches` at a time), so every worker of the
    journey queue takes a share: the bounds of the batches are read once, at the start of the
    occurrence, and carried across continue-as-new. Occurrences started before that replay
    their batches one after another.
    """

    @workflow.run
    async def run(self, data: ScheduleInput) -> SweepResult:
        if data.occurrence is None:
            scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START_TIME)
            data.occurrence = scheduled or workflow.now()
        data.now = data.occurrence  # the moment judged is the occurrence (and keys its ids)
        data.sweep_id = data.sweep_id or f"schedule/{data.journey}"
        batch = SweepBatch(config=data.config, now=data.now, sweep_id=data.sweep_id,
                           journey=data.journey, segment=data.segment)
        if data.bounds is not None or workflow.patched(PARALLEL_BATCHES_PATCH):
            return await _side_by_side(data, batch, PLAN_SCHEDULED, ENTER_SCHEDULED)
        return await _sweep(ENTER_SCHEDULED, data, batch)


@workflow.defn(name=IMPORT_ENTRY_WORKFLOW)
class ImportEntryWorkflow:
    """An import's contacts enter a journey: its `journey_imported` events, in batches side by
    side, each entered together as a schedule's are (`activities.broadcast`)."""

    @workflow.run
    async def run(self, data: ImportInput) -> SweepResult:
        data.now = data.now or workflow.now()
        data.sweep_id = data.sweep_id or workflow.info().workflow_id
        batch = SweepBatch(config=data.config, now=data.now, sweep_id=data.sweep_id,
                           journey=data.journey, import_id=data.import_id)
        return await _side_by_side(data, batch, PLAN_IMPORTED, ENTER_IMPORTED)


PARALLEL_BATCHES_PATCH = "schedule-batches-side-by-side"
"""Occurrences started before their batches ran side by side replay them one after another."""


async def _side_by_side(data: ScheduleInput | ImportInput, batch: SweepBatch, plan: str,
                        enter: str) -> SweepResult:
    """Enter the batches between the bounds (read by `plan` once), `parallel_batches` at a
    time, in waves of `enter` activities."""
    config = data.config
    if data.bounds is None:
        data.bounds = await workflow.execute_activity(
            plan, batch, result_type=list[str],
            start_to_close_timeout=BATCH_TIMEOUT, retry_policy=ACTIVITY_RETRY,
            summary="read the bounds of the batches")
    bounds: list[str | None] = [None, *data.bounds, None]
    total = len(bounds) - 1
    in_this_run = 0
    while data.batches < total:
        wave = range(data.batches, min(total, data.batches + config.parallel_batches))
        results: list[SweepBatchResult] = await asyncio.gather(*(
            workflow.execute_activity(
                enter,
                batch.model_copy(update={"after": bounds[i], "upto": bounds[i + 1]}),
                result_type=SweepBatchResult,
                start_to_close_timeout=BATCH_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
                summary=f"batch {i + 1} of {total} after {bounds[i] or 'the first contact'}",
            ) for i in wave))
        for result in results:
            data.contacts += result.contacts
            data.emitted += result.emitted
        data.batches += len(results)
        in_this_run += len(results)
        workflow.set_current_details(
            f"{data.contacts} contacts in {data.batches} of {total} batches; "
            f"{data.emitted} events emitted")
        if data.batches < total and (in_this_run >= config.batches_per_run
                                     or workflow.info().is_continue_as_new_suggested()):
            data.runs += 1
            workflow.continue_as_new(data)
    return SweepResult(contacts=data.contacts, batches=data.batches, emitted=data.emitted,
                       runs=data.runs)


__all__ = [
    "DateAttributeSweepWorkflow",
    "ImportEntryWorkflow",
    "ScheduledEntryWorkflow",
    "SegmentSweepWorkflow",
]
