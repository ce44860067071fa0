"""Temporal Schedules for everything time starts: the sweeps and the `schedule` triggers.

`register_schedules` makes the server's schedules match the published catalog:

- `cairn-segment-sweep`, hourly: re-decides time-based segments (inactive for 30 days) and
  applies the scoring rules' inactivity decays (-10 after 7 days without login);
- `cairn-date-sweep`, hourly: date triggers. Hourly rather than daily because contacts live in
  every time zone: each run emits for the contacts whose local due moment (e.g. their birthday at
  10:00 their time) passed within the last day, so everyone is reached within the hour of their
  local time, and the message ids per (journey, contact, date) keep the other 23 runs of the day
  from emitting again;
- `cairn-journey-schedule-<key>`, one per published journey with a `schedule` trigger: its cron
  in its time zone, each occurrence entering the members of its segment once.

Creating is idempotent: an existing schedule is updated to the wanted spec and action, and
journey schedules whose journey no longer has a `schedule` trigger are deleted. Overlapping runs
are skipped (a sweep still running when the next hour comes lets that hour go). `cairn dev` calls
this after publishing the catalog, and `cairn publish` when a Temporal server answers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from cairn.catalog import CatalogError
from cairn.journey import Journey
from cairn.log import get_logger
from cairn.settings import Settings
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.sweeps import (
    DATE_SWEEP_WORKFLOW,
    SCHEDULED_ENTRY_WORKFLOW,
    SEGMENT_SWEEP_WORKFLOW,
    SWEEP_EVERY,
    ScheduleInput,
    SweepConfig,
    SweepInput,
)

log = get_logger(__name__)

SEGMENT_SWEEP_SCHEDULE = "cairn-segment-sweep"
DATE_SWEEP_SCHEDULE = "cairn-date-sweep"
JOURNEY_SCHEDULE_PREFIX = "cairn-journey-schedule-"


class ScheduleRegistrationError(CatalogError):
    """A schedule the server refused (e.g. a cron it cannot parse); the message names the journey.

    A catalog error: the fix is in the journey file, and the CLI reports it like any other."""


def journey_schedule_id(journey_key: str) -> str:
    return f"{JOURNEY_SCHEDULE_PREFIX}{journey_key}"


ENTRY_BATCH_SIZE = 250
"""Contacts per batch when a schedule's occurrence or an import enters a journey: the batches
run side by side (`parallel_batches`), so smaller ones spread a broadcast over more workers."""


def sweep_config(settings: Settings) -> SweepConfig:
    return SweepConfig(
        journeys_dir=str(Path(settings.journeys_dir).resolve()),
        journey_task_queue=settings.journey_task_queue,
        delivery_task_queue=settings.delivery_task_queue,
    )


def entry_config(settings: Settings) -> SweepConfig:
    """The batches of a broadcast's entries (a schedule's occurrence, an import)."""
    return sweep_config(settings).model_copy(update={"batch_size": ENTRY_BATCH_SIZE})


def wanted_schedules(journeys: list[Journey], settings: Settings) -> dict[str, Schedule]:
    """Every schedule the catalog needs, by schedule id."""
    config = sweep_config(settings)
    policy = SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)
    hourly = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=SWEEP_EVERY)])
    queue = settings.journey_task_queue
    wanted = {
        SEGMENT_SWEEP_SCHEDULE: Schedule(
            action=ScheduleActionStartWorkflow(
                SEGMENT_SWEEP_WORKFLOW, SweepInput(config=config), id="cairn/segment-sweep",
                task_queue=queue,
                static_summary="re-decide time-based segments, apply inactivity decays",
            ),
            spec=hourly, policy=policy,
        ),
        DATE_SWEEP_SCHEDULE: Schedule(
            action=ScheduleActionStartWorkflow(
                DATE_SWEEP_WORKFLOW, SweepInput(config=config), id="cairn/date-sweep",
                task_queue=queue, static_summary="date_attribute triggers due this hour",
            ),
            spec=hourly, policy=policy,
        ),
    }
    for journey in journeys:
        trigger = journey.trigger.schedule
        if trigger is None:
            continue
        wanted[journey_schedule_id(journey.key)] = Schedule(
            action=ScheduleActionStartWorkflow(
                SCHEDULED_ENTRY_WORKFLOW,
                ScheduleInput(config=entry_config(settings), journey=journey.key,
                              segment=trigger.segment),
                id=f"cairn/schedule/{journey.key}",
                task_queue=queue,
                static_summary=f"{journey.name}: everyone in {trigger.segment or 'the store'}",
            ),
            spec=ScheduleSpec(cron_expressions=[trigger.cron], time_zone_name=trigger.timezone),
            policy=policy,
        )
    return wanted


async def register_schedules(client: Client, store: Store, settings: Settings) -> list[str]:
    """Create or update the sweeps' and the published journeys' schedules; returns their ids."""
    async with store.session() as s:
        journeys = [journeys_repo.journey_of(row) for row in await journeys_repo.published(s)]
    wanted = wanted_schedules(journeys, settings)
    for schedule_id, schedule in wanted.items():
        bound = log.bind(schedule=schedule_id)
        try:
            await client.create_schedule(schedule_id, schedule)
            bound.info("schedule.created")
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(schedule_id).update(_replace_with(schedule))
            bound.info("schedule.updated")
        except RPCError as error:
            raise ScheduleRegistrationError(
                f"Temporal refused the schedule {schedule_id}: {error.message}; check the "
                "journey's trigger.schedule (cron such as '0 9 * * mon', an IANA timezone)"
            ) from error
    async for listed in await client.list_schedules():
        if listed.id.startswith(JOURNEY_SCHEDULE_PREFIX) and listed.id not in wanted:
            await client.get_schedule_handle(listed.id).delete()
            log.info("schedule.deleted", schedule=listed.id,
                     reason="its journey no longer has a schedule trigger")
    return list(wanted)


def _replace_with(schedule: Schedule) -> Callable[[ScheduleUpdateInput], ScheduleUpdate]:
    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)
    return update


async def register_if_reachable(
    store: Store, settings: Settings, folder: Path | None = None
) -> list[str] | None:
    """`cairn publish`'s hook: register the schedules when a Temporal server answers, else None.

    `folder` is the catalog just published (its segments/ are what the sweeps read).
    """
    from starter.temporal import TemporalConnectionError, connect

    if folder is not None:
        settings = settings.model_copy(update={"journeys_dir": folder})
    try:
        client = await connect(settings, timeout=timedelta(seconds=3))
    except TemporalConnectionError:
        log.info("schedule.skipped", reason="Temporal does not answer",
                 address=settings.temporal_address)
        return None
    return await register_schedules(client, store, settings)


__all__ = [
    "DATE_SWEEP_SCHEDULE",
    "JOURNEY_SCHEDULE_PREFIX",
    "SEGMENT_SWEEP_SCHEDULE",
    "ScheduleRegistrationError",
    "entry_config",
    "journey_schedule_id",
    "register_if_reachable",
    "register_schedules",
    "sweep_config",
    "wanted_schedules",
]
