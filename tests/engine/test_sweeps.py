"""Sweeps and scheduled triggers on a time-skipping server, with the real worker and SQLite store.

Each test runs the sweep workflows through the worker `starter.worker` builds (so registration is
covered), on queues of its own, against a store of its own with a catalog folder of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities import journey_activities
from activities.sweeps import SweepActivities
from cairn.date_triggers import due_date
from cairn.events.router import RouteDecision, Router
from cairn.journey import DateAttributeTrigger, Journey
from cairn.journey_run import EventMessage
from cairn.settings import Settings, get_settings
from cairn.store import contacts as contacts_repo
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.store.schema import Event, SegmentMembership
from cairn.sweeps import (
    DATE_SWEEP_WORKFLOW,
    SCHEDULED_ENTRY_WORKFLOW,
    SEGMENT_SWEEP_WORKFLOW,
    ScheduleInput,
    SweepConfig,
    SweepInput,
    SweepResult,
)
from starter.cli.main import app as cli_app
from starter.schedules import (
    DATE_SWEEP_SCHEDULE,
    SEGMENT_SWEEP_SCHEDULE,
    journey_schedule_id,
    register_schedules,
)
from starter.worker import journey_workers, running, workflow_runner
from tests.engine_support import terminate_leftovers, unique
from workflows import WORKFLOWS

ENDS_AT_ONCE = {"bye": {"end": "done"}}


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog folder with the inactivity segment and a VIP segment (members set by tests)."""
    folder = tmp_path / "journeys"
    (folder / "segments").mkdir(parents=True)
    (folder / "segments" / "inactive_30d.yaml").write_text(
        "key: inactive_30d\nrule: {attribute: last_seen_at, older_than: 30d}\n")
    (folder / "segments" / "vip.yaml").write_text(
        "key: vip\nrule: {attribute: vip, eq: true}\n")
    return folder


@asynccontextmanager
async def worker(env: WorkflowEnvironment, store: Store, catalog: Path,
                 **options: Any) -> AsyncIterator[SweepConfig]:
    """The real workers on this test's own queues; ends whatever runs the test left open."""
    queue = unique("sweeps")
    config = SweepConfig(journeys_dir=str(catalog), journey_task_queue=queue,
                         delivery_task_queue=f"{queue}-delivery", **options)
    async with running(journey_workers(env.client, store, journey_queue=queue,
                                       delivery_queue=f"{queue}-delivery")):
        try:
            yield config
        finally:
            await terminate_leftovers(env.client, store)


async def publish(store: Store, definition: dict[str, Any]) -> Journey:
    journey = Journey.model_validate(definition)
    async with store.session() as session, session.begin():
        row, _ = await journeys_repo.publish(session, journey, source=None,
                                             now=datetime.now(UTC))
    return journeys_repo.journey_of(row)


async def add_contact(store: Store, contact_id: str, last_seen: datetime,
                      traits: dict[str, Any] | None = None) -> None:
    async with store.session() as session, session.begin():
        await contacts_repo.ensure_contact(session, contact_id, last_seen)
        if traits:
            await contacts_repo.identify(session, contact_id, traits, last_seen)


async def run(env: WorkflowEnvironment, workflow: str, data: SweepInput,
              queue: str) -> SweepResult:
    result: SweepResult = await env.client.execute_workflow(
        workflow, data, id=unique("sweep"), task_queue=queue, result_type=SweepResult)
    return result


async def events(store: Store, name: str, contact: str | None = None) -> list[Event]:
    async with store.session() as session:
        query = select(Event).where(Event.name == name)
        if contact is not None:
            query = query.where(Event.contact_id == contact)
        return list(await session.scalars(query.order_by(Event.id)))


async def entered(store: Store, journey_key: str, contact: str | None = None) -> list[Any]:
    async with store.session() as session:
        return list(await entries_repo.entries_for(session, journey_key, contact))


# --------------------------------------------------------------------------- segment sweep


async def test_segment_sweep_enters_inactive_contacts_once(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    now = datetime.now(UTC)
    key = unique("winback")
    await publish(sqlite_store, {
        "key": key, "name": "Win back",
        "trigger": {"segment_entered": "inactive_30d"}, "steps": ENDS_AT_ONCE})
    await add_contact(sqlite_store, "gone", now - timedelta(days=31))
    await add_contact(sqlite_store, "active", now - timedelta(days=2))

    async with worker(temporal_env, sqlite_store, catalog) as config:
        first = await run(temporal_env, SEGMENT_SWEEP_WORKFLOW,
                          SweepInput(config=config, now=now), config.journey_task_queue)
        assert (first.contacts, first.emitted) == (2, 1)
        async with sqlite_store.session() as session:
            assert await segments_repo.active_segments(session, "gone") == ["inactive_30d"]
            assert await segments_repo.active_segments(session, "active") == []
        [emitted] = await events(sqlite_store, "segment_entered")
        assert (emitted.contact_id, emitted.properties) == ("gone", {"segment": "inactive_30d"})
        assert emitted.routed_at is not None
        [entry] = await entered(sqlite_store, key)
        assert entry.contact_id == "gone"

        second = await run(temporal_env, SEGMENT_SWEEP_WORKFLOW,
                           SweepInput(config=config, now=now + timedelta(hours=1)),
                           config.journey_task_queue)
    assert (second.contacts, second.emitted) == (2, 0)
    assert len(await events(sqlite_store, "segment_entered")) == 1
    assert len(await entered(sqlite_store, key)) == 1
    async with sqlite_store.session() as session:
        rows = await session.scalar(select(func.count()).select_from(SegmentMembership))
    assert rows == 1


async def test_segment_sweep_closes_the_entries_of_terminated_runs(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    """A terminated run ran no code at its end: the sweep asks Temporal and closes its entry
    as failed, and leaves the running one alone."""
    # The module's time-skipping server may be far ahead of the wall clock by now (earlier
    # tests skip time); the runs' 30-day wait counts from their event, so the events are
    # timed by the server's clock, where the wait is still ahead.
    now = await temporal_env.get_current_time()
    key = unique("stuck")
    await publish(sqlite_store, {"key": key, "name": "Stuck", "trigger": {"event": "go"},
                                 "steps": {"pause": {"wait": "30d", "next": "end"}}})
    async with worker(temporal_env, sqlite_store, catalog) as config:
        router = Router(temporal_env.client, sqlite_store, task_queue=config.journey_task_queue)
        for contact in ("stuck-1", "fine-1"):
            [decision] = await router.route(EventMessage(
                message_id=f"go-{contact}", event="go", contact_id=contact, properties={},
                timestamp=now - timedelta(minutes=5)))
            assert decision.action == "started"
        stuck = await entered(sqlite_store, key, "stuck-1")
        await temporal_env.client.get_workflow_handle(stuck[0].workflow_id).terminate(
            reason="operator: provider outage")

        await run(temporal_env, SEGMENT_SWEEP_WORKFLOW, SweepInput(config=config, now=now),
                  config.journey_task_queue)

        [closed] = await entered(sqlite_store, key, "stuck-1")
        [running] = await entered(sqlite_store, key, "fine-1")
    assert closed.outcome == "failed" and closed.reason is not None
    assert closed.reason.startswith("run terminated") and "provider outage" in closed.reason
    assert (running.outcome, running.ended_at) == (None, None)


async def test_segment_sweep_continues_as_new_and_covers_everyone(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    now = datetime.now(UTC)
    contacts = [f"c{i}" for i in range(7)]
    for contact in contacts:
        await add_contact(sqlite_store, contact, now - timedelta(days=40))

    async with worker(temporal_env, sqlite_store, catalog, batch_size=2,
                      batches_per_run=1) as config:
        result = await run(temporal_env, SEGMENT_SWEEP_WORKFLOW,
                           SweepInput(config=config, now=now), config.journey_task_queue)

    assert result.contacts == 7
    assert result.batches == 4
    assert result.runs == 4  # one batch per run: continued as new three times
    assert result.emitted == 7
    async with sqlite_store.session() as session:
        for contact in contacts:
            assert await segments_repo.active_segments(session, contact) == ["inactive_30d"]


class FlakyRouter(Router):
    """The real router, but Temporal "goes away" for the first routing of one contact's event."""

    def __init__(self, *args: Any, fail_for: str, **options: Any) -> None:
        super().__init__(*args, **options)
        self.fail_for = fail_for
        self.failures = 0

    async def route(self, event: EventMessage) -> list[RouteDecision]:
        if event.contact_id == self.fail_for and self.failures == 0:
            self.failures += 1
            raise RuntimeError("Temporal is unreachable (injected by the test)")
        return await super().route(event)


async def test_a_batch_that_fails_midway_is_redone_without_emitting_twice(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    now = datetime.now(UTC)
    key = unique("winback")
    await publish(sqlite_store, {
        "key": key, "name": "Win back",
        "trigger": {"segment_entered": "inactive_30d"}, "steps": ENDS_AT_ONCE})
    contacts = [f"c{i}" for i in range(5)]
    for contact in contacts:
        await add_contact(sqlite_store, contact, now - timedelta(days=40))
    queue = unique("sweeps")
    router = FlakyRouter(temporal_env.client, sqlite_store, task_queue=queue, fail_for="c3")
    sweeps = SweepActivities(sqlite_store, router=router)
    activities = [a for a in journey_activities(sqlite_store) if a.__name__ != "sweep_segments"]
    config = SweepConfig(journeys_dir=str(catalog), journey_task_queue=queue, batch_size=2)
    async with Worker(temporal_env.client, task_queue=queue, workflows=list(WORKFLOWS),
                      activities=[*activities, sweeps.sweep_segments],
                      workflow_runner=workflow_runner()):
        try:
            result = await run(temporal_env, SEGMENT_SWEEP_WORKFLOW,
                               SweepInput(config=config, now=now), queue)
        finally:
            await terminate_leftovers(temporal_env.client, sqlite_store)

    assert router.failures == 1  # the second batch failed once, after storing its events
    # The failed attempt stored c2's and c3's events; its retry found them stored and only routed
    # them, so the sweep counts 3 newly stored events.
    assert (result.contacts, result.batches, result.emitted) == (5, 3, 3)
    entered_events = await events(sqlite_store, "segment_entered")
    assert sorted(e.contact_id for e in entered_events) == contacts  # none stored twice
    assert all(e.routed_at is not None for e in entered_events)  # the retry routed the rest
    assert sorted(e.contact_id for e in await entered(sqlite_store, key)) == contacts


async def test_inactivity_decay_on_the_sweep_crosses_a_threshold_and_starts_a_journey(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    """-10 after 7 days without login, applied by the segment sweep: the history says why, and
    falling below 50 emits a routed `score_crossed` that starts the sales team's journey."""
    (catalog / "scoring").mkdir()
    (catalog / "scoring" / "engagement.yaml").write_text(
        "key: engagement\n"
        "decay: [{without: login, after: 7d, add: -10, reason: no login for 7 days}]\n"
        "thresholds: {global: [50]}\n")
    now = datetime.now(UTC)
    key = unique("cooling")
    await publish(sqlite_store, {"key": key, "name": "Lead cooling down", "trigger": {
        "event": "score_crossed", "where": {"properties.direction": "down"}},
        "steps": ENDS_AT_ONCE})
    await add_contact(sqlite_store, "quiet", now - timedelta(days=8))
    await add_contact(sqlite_store, "recent", now - timedelta(days=2))
    async with sqlite_store.session() as session, session.begin():
        for contact in ("quiet", "recent"):
            await scores_repo.change_score(session, contact_id=contact, dimension="global",
                                           delta=55, reason="seed", source=None,
                                           workflow_id=None, idempotency_key=None, now=now)

    async with worker(temporal_env, sqlite_store, catalog) as config:
        data = SweepInput(config=config, now=now)
        first = await run(temporal_env, SEGMENT_SWEEP_WORKFLOW, data, config.journey_task_queue)
        assert (first.contacts, first.emitted) == (2, 1)
        [crossed] = await events(sqlite_store, "score_crossed")
        assert crossed.contact_id == "quiet"
        assert crossed.properties == {"dimension": "global", "threshold": 50,
                                      "direction": "down", "total": 45}
        assert crossed.routed_at is not None
        [entry] = await entered(sqlite_store, key)
        assert entry.contact_id == "quiet"
        assert entry.trigger_message_id == crossed.message_id

        later = await run(temporal_env, SEGMENT_SWEEP_WORKFLOW,
                          SweepInput(config=config, now=now + timedelta(hours=1)),
                          config.journey_task_queue)
    assert later.emitted == 0
    assert len(await entered(sqlite_store, key)) == 1
    async with sqlite_store.session() as session:
        assert await scores_repo.scores_of(session, "quiet") == {"global": 45}
        assert await scores_repo.scores_of(session, "recent") == {"global": 55}
        [_, decay] = await scores_repo.score_history(session, contact_id="quiet")
    assert (decay.delta, decay.reason) == (-10, "no login for 7 days")
    assert decay.source is not None and decay.source.startswith("sweep:")


# --------------------------------------------------------------------------- date attributes


async def test_birthday_reaches_each_contact_on_their_local_day_once(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    key = unique("birthday")
    await publish(sqlite_store, {"key": key, "name": "Birthday email", "trigger": {
        "date_attribute": {"attribute": "birthday", "yearly": True, "time": "10:00"}},
        "steps": ENDS_AT_ONCE})
    seen = datetime(2026, 6, 1, tzinfo=UTC)
    await add_contact(sqlite_store, "tokyo", seen,
                      {"timezone": "Asia/Tokyo", "birthday": "1990-06-15"})
    await add_contact(sqlite_store, "la", seen,
                      {"timezone": "America/Los_Angeles", "birthday": "1985-06-15"})
    await add_contact(sqlite_store, "no-date", seen, {"timezone": "UTC"})

    tokyo_morning = datetime(2026, 6, 15, 1, 30, tzinfo=UTC)  # 10:30 in Tokyo; 18:30 the 14th in LA
    la_morning = datetime(2026, 6, 15, 17, 30, tzinfo=UTC)  # 10:30 in LA; 02:30 the 16th in Tokyo

    async with worker(temporal_env, sqlite_store, catalog) as config:
        queue = config.journey_task_queue
        early = await run(temporal_env, DATE_SWEEP_WORKFLOW,
                          SweepInput(config=config, now=tokyo_morning - timedelta(hours=1)), queue)
        assert early.emitted == 0  # 09:30 in Tokyo: not yet
        first = await run(temporal_env, DATE_SWEEP_WORKFLOW,
                          SweepInput(config=config, now=tokyo_morning), queue)
        assert first.emitted == 1
        assert [e.contact_id for e in await entered(sqlite_store, key)] == ["tokyo"]

        later = await run(temporal_env, DATE_SWEEP_WORKFLOW,
                          SweepInput(config=config, now=la_morning), queue)
        again = await run(temporal_env, DATE_SWEEP_WORKFLOW,
                          SweepInput(config=config, now=la_morning + timedelta(hours=1)), queue)

    assert (later.emitted, again.emitted) == (1, 0)
    reached = await events(sqlite_store, "date_attribute_reached")
    assert [(e.contact_id, e.properties) for e in reached] == [
        ("tokyo", {"attribute": "birthday", "journey": key, "date": "2026-06-15"}),
        ("la", {"attribute": "birthday", "journey": key, "date": "2026-06-15"}),
    ]
    assert all(e.routed_at is not None for e in reached)
    assert sorted(e.contact_id for e in await entered(sqlite_store, key)) == ["la", "tokyo"]


def test_due_date_offsets_and_leap_days() -> None:
    emi = DateAttributeTrigger(attribute="emi_due_date", offset="-10d", time="10:00")
    due = {"emi_due_date": "2026-03-20"}
    at = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)  # 11:00 in Bucharest on the 10th
    assert due_date(emi, due, "Europe/Bucharest", "UTC", at) == date(2026, 3, 10)
    assert due_date(emi, due, "Europe/Bucharest", "UTC", at - timedelta(hours=2)) is None
    assert due_date(emi, due, None, "UTC", at + timedelta(days=2)) is None  # a day late: past
    assert due_date(emi, {"emi_due_date": "soon"}, None, "UTC", at) is None

    leap = DateAttributeTrigger(attribute="birthday", yearly=True, time="09:00")
    born = {"birthday": "2000-02-29"}
    assert due_date(leap, born, "UTC", "UTC", datetime(2026, 2, 28, 9, 5, tzinfo=UTC)) == date(
        2026, 2, 28)
    # A contact without a zone gets the journey's; an unknown zone falls back to it as well.
    assert due_date(leap, born, "Mars/Olympus", "UTC",
                    datetime(2026, 2, 28, 9, 5, tzinfo=UTC)) == date(2026, 2, 28)


# --------------------------------------------------------------------------- schedules


async def test_schedule_occurrence_enters_each_member_once(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    key = unique("weekly")
    await publish(sqlite_store, {"key": key, "name": "Weekly progress report", "trigger": {
        "schedule": {"cron": "0 9 * * mon", "segment": "vip", "timezone": "Europe/Bucharest"}},
        "steps": ENDS_AT_ONCE})
    seen = datetime.now(UTC)
    for contact in ("ana", "bo", "cy"):
        await add_contact(sqlite_store, contact, seen, {"vip": contact != "cy"})
    async with sqlite_store.session() as session, session.begin():
        for member in ("ana", "bo"):
            await segments_repo.enter_segment(session, member, "vip", seen)
        await segments_repo.enter_segment(session, "cy", "vip", seen)
        await segments_repo.exit_segment(session, "cy", "vip", seen)  # left: not a member

    occurrence = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    async with worker(temporal_env, sqlite_store, catalog, batch_size=1) as config:
        data = ScheduleInput(config=config, journey=key, segment="vip", occurrence=occurrence)
        first = await run(temporal_env, SCHEDULED_ENTRY_WORKFLOW, data,
                          config.journey_task_queue)
        second = await run(temporal_env, SCHEDULED_ENTRY_WORKFLOW, data,
                           config.journey_task_queue)
        next_week = await run(temporal_env, SCHEDULED_ENTRY_WORKFLOW, data.model_copy(
            update={"occurrence": occurrence + timedelta(days=7)}), config.journey_task_queue)

    assert (first.contacts, first.emitted) == (2, 2)
    assert (second.contacts, second.emitted) == (2, 0)
    assert next_week.emitted == 2
    fired = await events(sqlite_store, "schedule_fired")
    # the batches run side by side: their events are stored in any order
    assert [(e.contact_id, e.properties)
            for e in sorted(fired[:2], key=lambda e: e.contact_id)] == [
        ("ana", {"journey": key, "occurrence": "2026-06-01T06:00:00Z"}),
        ("bo", {"journey": key, "occurrence": "2026-06-01T06:00:00Z"}),
    ]
    entries = await entered(sqlite_store, key)
    assert sorted(e.contact_id for e in entries) == ["ana", "ana", "bo", "bo"]
    assert {e.trigger_message_id for e in entries} == {e.message_id for e in fired}


# --------------------------------------------------------------------------- registration


async def test_register_schedules_on_a_dev_server(
    sqlite_store: Store, catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starter.dev import DevServer, free_port

    key = unique("weekly")
    await publish(sqlite_store, {"key": key, "name": "Weekly report", "trigger": {
        "schedule": {"cron": "0 9 * * mon", "segment": "vip", "timezone": "Europe/Bucharest"}},
        "steps": ENDS_AT_ONCE})
    queue = unique("sweeps")
    settings = Settings(home=tmp_path / "home", journeys_dir=catalog, journey_task_queue=queue,
                        delivery_task_queue=f"{queue}-delivery")
    await add_contact(sqlite_store, "ana", datetime.now(UTC), {"vip": True})
    async with sqlite_store.session() as session, session.begin():
        await segments_repo.enter_segment(session, "ana", "vip", datetime.now(UTC))
    server = DevServer(db_file=None, log_file=tmp_path / "temporal.log", port=free_port(),
                       headless=True)
    client = await server.start(settings)
    try:
        first = await register_schedules(client, sqlite_store, settings)
        second = await register_schedules(client, sqlite_store, settings)
        assert first == second == [SEGMENT_SWEEP_SCHEDULE, DATE_SWEEP_SCHEDULE,
                                   journey_schedule_id(key)]
        weekly = await client.get_schedule_handle(journey_schedule_id(key)).describe()
        # The server keeps a cron as the calendar it means: Mondays at 09:00.
        [calendar] = weekly.schedule.spec.calendars
        assert [(r.start, r.end) for r in calendar.hour] == [(9, 9)]
        assert [(r.start, r.end) for r in calendar.day_of_week] == [(1, 1)]
        assert weekly.schedule.spec.time_zone_name == "Europe/Bucharest"
        sweep = await client.get_schedule_handle(SEGMENT_SWEEP_SCHEDULE).describe()
        assert [i.every for i in sweep.schedule.spec.intervals] == [timedelta(hours=1)]
        assert sweep.schedule.action.workflow == SEGMENT_SWEEP_WORKFLOW  # type: ignore[attr-defined]

        # An occurrence, triggered now, runs through the real worker and enters the segment.
        async with running(journey_workers(client, sqlite_store, journey_queue=queue,
                                           delivery_queue=f"{queue}-delivery")):
            await client.get_schedule_handle(journey_schedule_id(key)).trigger()
            for _ in range(200):
                if await entered(sqlite_store, key):
                    break
                await asyncio.sleep(0.1)
            [entry] = await entered(sqlite_store, key)
            assert entry.contact_id == "ana"
            await terminate_leftovers(client, sqlite_store)

        # The journey loses its schedule trigger: its schedule goes on the next registration.
        await publish(sqlite_store, {
            "key": key, "name": "Weekly report",
            "trigger": {"event": "report_requested"}, "steps": ENDS_AT_ONCE})
        third = await register_schedules(client, sqlite_store, settings)
        assert third == [SEGMENT_SWEEP_SCHEDULE, DATE_SWEEP_SCHEDULE]
        with pytest.raises(RPCError):
            await client.get_schedule_handle(journey_schedule_id(key)).describe()

        # `cairn publish` registers them too when the server answers.
        (catalog / "monthly.yaml").write_text(
            "key: monthly-digest\nname: Monthly digest\n"
            "trigger: {schedule: {cron: '0 8 1 * *'}}\nsteps: {bye: {end: done}}\n")
        monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS", server.address)
        monkeypatch.setenv("CAIRN_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
        get_settings.cache_clear()
        try:
            published = await asyncio.to_thread(
                CliRunner().invoke, cli_app, ["publish", str(catalog)])
        finally:
            get_settings.cache_clear()
        assert published.exit_code == 0, published.output
        assert journey_schedule_id("monthly-digest") in published.output
        monthly = await client.get_schedule_handle(journey_schedule_id("monthly-digest")).describe()
        assert monthly.schedule.spec.time_zone_name == "UTC"
    finally:
        await server.stop()
