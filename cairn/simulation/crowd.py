"""Many simulated contacts through the real engine, to check an experiment's set-up in CI.

`play_crowd(simulator, journey, scenario, step="mail", contacts=100, behaviour={"a":
Behaviour(click=0.05), "b": Behaviour(click=0.3)})` plays the scenario once per contact on the
simulator's time-skipping server, with the real interpreter and activities and one throwaway
store: contact `n` is the scenario's contact with the id `<id>-<n>` (an email address gets
`+<n>`), arriving `spacing` after contact `n-1`, and makes the scenario's events shifted by its
arrival. Whatever arm the engine gives a contact at the experiment's step (a send's variant, a
split's path or holdout; the decided winner once there is one), the contact then behaves as its
arm's `Behaviour` says, as scenario events do: `after` the message (or the split), it clicks a
tracked link with probability `click` and does the conversion event with probability `convert`.
The draws are seeded per contact, so the same call gives the same figures.

The answer holds the experiment's figures as `cairn report` computes them (the same
`cairn.reports.journey_report` over the run's store): per arm contacts, conversions, rate,
interval, uplift, significance, the automatic decision; plus the funnel, the message table and
how long the run took in real time.

Not here: the pure model of one experiment step (`cairn.simulation.population`, thousands of
contacts in milliseconds); one contact with its full report (`Simulator.run`).
"""

from __future__ import annotations

import heapq
import itertools
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from cairn import links
from cairn.durations import parse_duration
from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.ingest import Ingest, IngestResult
from cairn.events.router import Router
from cairn.experiments import ExperimentReport
from cairn.journey import Journey, SendStep, SplitStep
from cairn.reports import JourneyReport, MessageFigures, VersionFunnel, journey_report
from cairn.simulation.engine import Simulator, _Clock, _Entries, _SimulationRun
from cairn.simulation.errors import SimulationError
from cairn.simulation.scenario import Scenario, ScenarioEvent
from cairn.store import contacts, journeys
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryLink, ExperimentAssignment

__all__ = ["Behaviour", "CrowdReport", "play_crowd"]

Agendum = tuple[datetime, int, str, str, ScenarioEvent]
"""What a contact does when: (moment, order, contact, message id, event); the order keeps a
contact's scripted events in file order and reactions after them."""


class Behaviour(BaseModel):
    """How the contacts of one arm react to it."""

    click: float = Field(default=0, ge=0, le=1,
                         description="probability to click a tracked link of the message")
    convert: float = Field(default=0, ge=0, le=1,
                           description="probability to do the conversion event")
    link: str | None = Field(default=None, description="the link clicked: its label or "
                                                       "address (default: the first one)")
    after: timedelta = Field(default=timedelta(hours=1),
                             description="how long after the arm the contact reacts (`90m`, "
                                         "`5h`, `2d`)")

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


class CrowdReport(BaseModel):
    journey: str
    step: str
    contacts: int
    entered: int = Field(description="contacts whose events started an entry")
    seconds: float = Field(description="real time the run took")
    behaviour: dict[str, Behaviour]
    experiment: ExperimentReport = Field(description="the step's experiment, as the report has it")
    funnel: VersionFunnel
    messages: list[MessageFigures]


async def play_crowd(
    simulator: Simulator, journey: Journey, scenario: Scenario, *, step: str, contacts: int,
    behaviour: dict[str, Behaviour], conversion: ScenarioEvent | None = None, seed: int = 13,
    spacing: timedelta = timedelta(minutes=10),
) -> CrowdReport:
    """Play `scenario` for `contacts` contacts, each reacting to the arm it got at `step` as
    `behaviour` says; `conversion` is the event a converting contact makes (default: the
    experiment's goal event or metric event)."""
    found = journey.steps.get(step)
    if not isinstance(found, SendStep | SplitStep) or not (
            (isinstance(found, SendStep) and found.send.variants)
            or (isinstance(found, SplitStep) and found.split.experiment is not None)):
        raise ValueError(f"steps.{step}: not a send with variants or a split with an experiment")
    arms = ([v.arm for v in found.send.variants or []] if isinstance(found, SendStep)
            else found.split.arm_names())
    unknown, missing = sorted(set(behaviour) - set(arms)), [a for a in arms if a not in behaviour]
    if unknown or missing:
        raise ValueError(f"behaviour names arms {', '.join(arms)}: "
                         + "; ".join([*(f"unknown {a!r}" for a in unknown),
                                      *(f"missing {a!r}" for a in missing)]))
    if contacts < 1:
        raise ValueError("contacts: at least one")
    if any(b.convert for b in behaviour.values()):
        conversion = conversion or _conversion_event(journey, found)
    run = _CrowdRun(simulator, journey, scenario, step, contacts, behaviour, conversion, seed,
                    spacing)
    started = time.perf_counter()
    async with simulator.exclusive():
        report = await run.play_crowd()
    elapsed = time.perf_counter() - started
    experiment = next(e for e in report.experiments if e.step == step)
    return CrowdReport(journey=journey.key, step=step, contacts=contacts, entered=run.entered,
                       seconds=round(elapsed, 3), behaviour=behaviour, experiment=experiment,
                       funnel=report.funnel, messages=report.messages)


def _conversion_event(journey: Journey, step: SendStep | SplitStep) -> ScenarioEvent:
    experiment = step.send.experiment if isinstance(step, SendStep) else step.split.experiment
    metric = experiment.metric if experiment is not None else None
    if metric is not None and metric.kind == "event" and metric.name:
        return ScenarioEvent(event=metric.name)
    goals = [g for g in journey.exit if metric is None or metric.kind != "goal"
             or g.goal == metric.name]
    if metric is not None and metric.kind == "goal" and goals:
        return ScenarioEvent(event=goals[0].event)
    if goals:
        return ScenarioEvent(event=goals[0].event)
    raise ValueError("convert: the journey has no exit goal and the experiment no event "
                     "metric; pass `conversion` (the event a converting contact makes)")


def _member(template: Scenario, n: int) -> tuple[str, str | None]:
    contact = template.contact
    email = contact.email
    if email and "@" in email:
        local, _, domain = email.partition("@")
        email = f"{local}+{n}@{domain}"
    return f"{contact.id}-{n}", email


class _CrowdRun(_SimulationRun):
    """One store, one set of workers, many contacts: their events and reactions in time order."""

    def __init__(self, simulator: Simulator, journey: Journey, scenario: Scenario, step: str,
                 contacts: int, behaviour: dict[str, Behaviour],
                 conversion: ScenarioEvent | None, seed: int, spacing: timedelta) -> None:
        super().__init__(simulator, journey, scenario, False)
        self.step = step
        self.contacts = contacts
        self.behaviour = behaviour
        self.conversion = conversion
        self.seed = seed
        self.spacing = spacing
        self.entered = 0
        self.order = itertools.count()

    async def play_crowd(self) -> JourneyReport:
        with tempfile.TemporaryDirectory(prefix="cairn-crowd-") as folder:
            store = await Store.open(f"sqlite+aiosqlite:///{Path(folder) / 'crowd.db'}")
            try:
                return await self._play_crowd(store)
            finally:
                await store.close()

    async def _play_crowd(self, store: Store) -> JourneyReport:
        scenario = self.scenario
        self.offset = scenario.now - await self.env.get_current_time()
        clock = _Clock(self.env, self.offset, self.step_timeout)
        agenda: list[Agendum] = []
        async with store.session() as session, session.begin():
            for n in range(1, self.contacts + 1):
                contact_id, email = _member(scenario, n)
                arrival = timedelta(0) + self.spacing * (n - 1)
                snapshot = scenario.contact.snapshot(scenario.now + arrival).model_copy(
                    update={"id": contact_id, "email": email})
                await contacts.create_contact(session, snapshot, scenario.now)
                for at, message_id, event in scenario.timeline():
                    agenda.append((at + arrival, next(self.order), contact_id,
                                   f"{contact_id}/{message_id}", event))
            published, _ = await journeys.publish(session, self.journey, source=None,
                                                  now=scenario.now)
        heapq.heapify(agenda)
        stop = scenario.stop_at + self.spacing * (self.contacts - 1)
        router = Router(self.client, store, task_queue=self.journey_queue,
                        clock_offset=clock.offset, delivery_task_queue=self.delivery_queue)
        self.current = scenario.now
        ingest = Ingest(store, router, clock=lambda: self.current, attribute_changes=True)
        workers = self.workers(self.client, store, journey_queue=self.journey_queue,
                               delivery_queue=self.delivery_queue, channels=None,
                               policy=scenario.policy, ingest=ingest)
        entry = _Entries(self.journey)
        seen = _Exposures(store, self.journey.key, self.step)
        async with workers:
            try:
                step = self.spacing
                while True:
                    if agenda and agenda[0][0] <= stop:
                        at, _, contact_id, message_id, event = heapq.heappop(agenda)
                        at = max(at, self.current)
                        await clock.advance_to(at)
                        self.current = at
                        await self._look(seen, agenda)
                        result = await self._act(store, ingest, contact_id, at, message_id,
                                                 event)
                        if result is not None:
                            for wid in entry.heard(at, event.label, result.routes):
                                self.entered += 1
                                described = await self.client.get_workflow_handle(wid).describe()
                                entry.runs.append((wid, described.run_id))
                        step = self.spacing
                        continue
                    if self.current >= stop:
                        break
                    # Nothing scripted before the stop: move on in growing steps, so that a
                    # send after a long wait still gets its reactions (late by one step at most).
                    self.current = min(stop, self.current + step)
                    await clock.advance_to(self.current)
                    await self._look(seen, agenda)
                    step *= 2
                return await journey_report(store, self.journey.key,
                                            version=published.version, now=stop)
            finally:
                await self._terminate(entry.workflow_ids)

    async def _look(self, seen: _Exposures, agenda: list[Agendum]) -> None:
        for exposure in await seen.new():
            self._react(agenda, *exposure)

    def _react(self, agenda: list[Agendum],
               contact_id: str, arm: str, at: datetime, delivery_id: int | None) -> None:
        """Schedule what the contact does about its arm, drawn with a per-contact seed."""
        behaviour = self.behaviour.get(arm)
        if behaviour is None:
            return
        draws = random.Random(f"{self.seed}/{contact_id}")
        clicks, converts = draws.random() < behaviour.click, draws.random() < behaviour.convert
        when = max(at + behaviour.after, self.current)
        if clicks and delivery_id is not None:
            click = ScenarioEvent(type="click", click=behaviour.link or f"#{delivery_id}",
                                  step=self.step)
            heapq.heappush(agenda, (when, next(self.order), contact_id,
                                    f"{contact_id}/click/{delivery_id}", click))
        if converts and self.conversion is not None:
            heapq.heappush(agenda, (when, next(self.order), contact_id,
                                    f"{contact_id}/convert/{arm}", self.conversion))

    async def _act(self, store: Store, ingest: Ingest, contact_id: str, at: datetime,
                   message_id: str, event: ScenarioEvent) -> IngestResult | None:
        """One scripted call or reaction of a contact, as live."""
        if event.type == "click":
            return await self._click_link(store, ingest, contact_id, at, event)
        if event.type == "identify":
            return await ingest.identify(IdentifyCall(
                user_id=contact_id, traits=event.traits, timestamp=at, message_id=message_id),
                route=True)
        assert event.event is not None
        return await ingest.track(TrackCall(
            user_id=contact_id, event=event.event, properties=event.properties, timestamp=at,
            message_id=message_id), route=True)

    async def _click_link(self, store: Store, ingest: Ingest, contact_id: str, at: datetime,
                          event: ScenarioEvent) -> IngestResult | None:
        assert event.click is not None
        async with store.session() as s:
            if event.click.startswith("#"):
                delivery_id = int(event.click[1:])
                link = await s.scalar(select(DeliveryLink).where(
                    DeliveryLink.delivery_id == delivery_id).order_by(DeliveryLink.position))
            else:
                link = await s.scalar(
                    select(DeliveryLink).join(Delivery, Delivery.id == DeliveryLink.delivery_id)
                    .where(Delivery.contact_id == contact_id, Delivery.step == self.step,
                           (DeliveryLink.label == event.click) | (DeliveryLink.url == event.click))
                    .order_by(Delivery.id.desc()))
        if link is None:
            raise SimulationError(
                f"click at {self.step} for {contact_id}: the message has no tracked link "
                f"{event.click!r} (give the template a link, or track_links is off)")
        click = await links.record_click(store, ingest, link.delivery_id, link.position, at)
        return click.event if click is not None else None


class _Exposures:
    """The arms given at the step since the last look: (contact, arm, when, delivery id)."""

    def __init__(self, store: Store, journey_key: str, step: str) -> None:
        self.store = store
        self.journey_key = journey_key
        self.step = step
        self.last_send = 0
        self.last_assignment = 0

    async def new(self) -> list[tuple[str, str, datetime, int | None]]:
        found: list[tuple[str, str, datetime, int | None]] = []
        async with self.store.session() as s:
            sends = (await s.execute(select(
                Delivery.id, Delivery.contact_id, Delivery.variant, Delivery.sent_at).where(
                Delivery.kind == "send", Delivery.journey_key == self.journey_key,
                Delivery.step == self.step, Delivery.status == "sent",
                Delivery.id > self.last_send).order_by(Delivery.id))).all()
            for row_id, contact_id, variant, sent_at in sends:
                self.last_send = row_id
                if variant and contact_id and sent_at:
                    found.append((contact_id, variant, sent_at, row_id))
            assigned = (await s.execute(select(
                ExperimentAssignment.id, ExperimentAssignment.contact_id,
                ExperimentAssignment.arm, ExperimentAssignment.assigned_at).where(
                ExperimentAssignment.journey_key == self.journey_key,
                ExperimentAssignment.step == self.step,
                ExperimentAssignment.id > self.last_assignment).order_by(
                ExperimentAssignment.id))).all()
            for row_id, contact_id, arm, assigned_at in assigned:
                self.last_assignment = row_id
                found.append((contact_id, arm, assigned_at, None))
        return found
