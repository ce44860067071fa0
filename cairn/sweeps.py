"""What the sweeps' workflows and activities agree on: names, inputs, batches and results.

The sweeps (`workflows.sweeps`) walk every contact in batches; their activities
(`activities.sweeps`) decide one batch. Both sides import these contracts from here, so neither
imports the other. `SWEEP_EVERY` is how often the hourly sweeps run (their Temporal Schedules,
and the simulator playing them).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from cairn.journey_run import JOURNEY_TASK_QUEUE

SWEEP_EVERY = timedelta(hours=1)
"""The interval of the segment and date sweeps' schedules."""

SWEEP_SEGMENTS = "sweep_segments"
SWEEP_DATE_ATTRIBUTES = "sweep_date_attributes"
ENTER_SCHEDULED = "enter_scheduled"
PLAN_SCHEDULED = "plan_scheduled"
ENTER_IMPORTED = "enter_imported"
PLAN_IMPORTED = "plan_imported"

SEGMENT_SWEEP_WORKFLOW = "SegmentSweepWorkflow"
DATE_SWEEP_WORKFLOW = "DateAttributeSweepWorkflow"
SCHEDULED_ENTRY_WORKFLOW = "ScheduledEntryWorkflow"
IMPORT_ENTRY_WORKFLOW = "ImportEntryWorkflow"



class SweepConfig(BaseModel):
    """Where definitions live and where events go; the same for every batch of a sweep."""

    journeys_dir: str = Field(description="the catalog folder; segments/ and scoring/ beside it")
    journey_task_queue: str = JOURNEY_TASK_QUEUE
    delivery_task_queue: str | None = None
    batch_size: int = Field(default=1000, ge=1, le=10_000, description=(
        "contacts per activity: a batch is decided with a few queries whatever its size, so "
        "bigger batches cost fewer round trips"))
    batches_per_run: int = Field(default=20, ge=1, description="continue-as-new after these")
    parallel_batches: int = Field(default=8, ge=1, le=64, description=(
        "batches of a schedule's occurrence entered at once: each is an activity, so the "
        "workers of the journey queue share them"))


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
    bounds: list[str] | None = Field(default=None, description=(
        "the last contact id of each batch but the last, read once when the occurrence starts "
        "(its batches then run side by side)"))


class ImportInput(SweepInput):
    """An import's entries into a journey: the `journey_imported` events the import stored
    (message ids `import/<import id>/<line>/journey/<journey>`), entered in batches side by
    side; `bounds` as for a schedule, but message ids."""

    journey: str
    import_id: str
    bounds: list[str] | None = None


def import_entry_id(import_id: str, journey: str) -> str:
    """The workflow id entering an import into a journey: one per (import, journey)."""
    return f"cairn/import/{import_id}/{journey}"


class SweepBatch(BaseModel):
    """One batch: the contacts after `after`, in id order, at most `config.batch_size`."""

    config: SweepConfig
    now: datetime = Field(description="the moment judged; for a schedule, its occurrence")
    sweep_id: str
    after: str | None = None
    upto: str | None = Field(default=None, description=(
        "the last contact id of the batch (its bound, inclusive): the contacts in (after, "
        "upto] whatever their number; without it, `config.batch_size` after `after`"))
    journey: str | None = None
    segment: str | None = None
    import_id: str | None = Field(default=None, description=(
        "for an import's entries: `after` and `upto` are message ids of its events"))


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
