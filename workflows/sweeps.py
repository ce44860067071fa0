"""Sweeps: workflows that walk every contact in batches for what time alone changes.

Three kinds, each a loop of one activity per batch of contact ids, with keyset pagination (the last
contact id of a batch is the cursor of the next) carried in the workflow state:

- `SegmentSweepWorkflow` re-decides time-based segments (inactive for 30 days) for everyone, and
  applies the inactivity decays of the scoring rules (-10 after 7 days without login);
- `DateAttributeSweepWorkflow` emits `date_attribute_reached` for contacts whose date attribute
  (shifted by the trigger's offset, yearly for birthdays) falls on today in their own time zone;
- `ScheduledEntryWorkflow` emits `schedule_fired` for every member of a `schedule` trigger's
  segment (or every contact) at one occurrence of its cron.

The cursor lives in the state, so after a crash (worker or activity) the sweep resumes at the
batch it was on; the activities are idempotent per batch (deterministic message ids), so redoing a
batch emits nothing twice. A run continues as new every `batches_per_run` batches (or when Temporal
suggests it), passing its whole state, so a sweep over millions of contacts keeps a small history.
The moment a sweep judges (`now`) is fixed when it starts and kept across runs: every batch judges
the same instant. The batch work itself (stores, segments, routing) is in `activities/sweeps.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from cairn.journey_run import JOURNEY_TASK_QUEUE

from workflows.run import ACTIVITY_RETRY

SWEEP_SEGMENTS = "sweep_segments"
SWEEP_DATE_ATTRIBUTES = "sweep_date_attributes"
ENTER_SCHEDULED = "enter_scheduled"

SEGMENT_SWEEP_WORKFLOW = "SegmentSweepWorkflow"
DATE_SWEEP_WORKFLOW = "DateAttributeSweepWorkflow"
SCHEDULED_ENTRY_WORKFLOW = "ScheduledEntryWorkflow"

BATCH_TIMEOUT = timedelta(minutes=10)
"""One batch (1,000 contacts decided, its events routed) takes seconds; the margin covers a slow
database, and a batch that really hangs is retried from its cursor."""

SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
"""Set by Temporal on runs a Schedule starts: the occurrence, even when the start was late."""


class SweepConfig(BaseModel):
    """Where definitions live and where events go; the same for every batch of a sweep."""

    journeys_dir: str = Field(description="the catalog folder; segments/ and scoring/ beside it")
    journey_task_queue: str = JOURNEY_TASK_QUEUE
    delivery_task_queue: str | None = None
    batch_size: int = Field(default=1000, ge=1, le=10_000, description=(
        "contacts per activity: a batch is decided with a few queries whatever its size, so "
        "bigger batches cost fewer round trips"))
    batches_per_run: int = Field(default=20, ge=1, description="continue-as-new after these")


class SweepInput(BaseModel):
    """Input and state of a sweep: a fresh sweep gives `config` only (and `now` in tests)."""

    config: SweepConfig
    now: datetime | None = Field(default=None, description="the moment judged; default: start")
    sweep_id: str | None = Field(default=None, description="prefix of the message ids it emits")
    cursor: str | None = Field(default=None, description="last contact id done")
    batches: int = 0
    contacts: int = 0
    emitted: int = 0
    runs: int = 1


class ScheduleInput(SweepInput):
    """A `schedule` trigger's occurrence: the journey, its audience segment and the occurrence."""

    journey: str
    segment: str | None = None
    occurrence: datetime | None = Field(
        default=None, description="default: the Schedule's scheduled start time"
    )


class SweepBatch(BaseModel):
    """One batch: the contacts after `after`, in id order, at most `config.batch_size`."""

    config: SweepConfig
    now: datetime = Field(description="the moment judged; for a schedule, its occurrence")
    sweep_id: str
    after: str | None = None
    journey: str | None = None
    segment: str | None = None


class SweepBatchResult(BaseModel):
    contacts: int = Field(description="contacts looked at in this batch")
    last: str | None = Field(default=None, description="the cursor for the next batch")
    emitted: int = Field(default=0, description="events this attempt stored (a retried batch "
                                                 "finds the failed attempt's stored already)")
    routed: int = Field(default=0, description="events routed by this batch")

    def finished(self, batch_size: int) -> bool:
        return self.last is None or self.contacts < batch_size


class SweepResult(BaseModel):
    contacts: int
    batches: int
    emitted: int
    runs: int


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
        return await _sweep(SWEEP_SEGMENTS, data, batch)


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
    """One occurrence of a `schedule` trigger: every member of its segment enters, once."""

    @workflow.run
    async def run(self, data: ScheduleInput) -> SweepResult:
        if data.occurrence is None:
            scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START_TIME)
            data.occurrence = scheduled or workflow.now()
        data.now = data.occurrence  # the moment judged is the occurrence (and keys its ids)
        data.sweep_id = data.sweep_id or f"schedule/{data.journey}"
        batch = SweepBatch(config=data.config, now=data.now, sweep_id=data.sweep_id,
                           journey=data.journey, segment=data.segment)
        return await _sweep(ENTER_SCHEDULED, data, batch)


__all__ = [
    "DATE_SWEEP_WORKFLOW",
    "ENTER_SCHEDULED",
    "SCHEDULED_ENTRY_WORKFLOW",
    "SEGMENT_SWEEP_WORKFLOW",
    "SWEEP_DATE_ATTRIBUTES",
    "SWEEP_SEGMENTS",
    "DateAttributeSweepWorkflow",
    "ScheduleInput",
    "ScheduledEntryWorkflow",
    "SegmentSweepWorkflow",
    "SweepBatch",
    "SweepBatchResult",
    "SweepConfig",
    "SweepInput",
    "SweepResult",
]
