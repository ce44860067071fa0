"""Experiments: per-arm figures from the store, and automatic winners.

An experiment is a send with `variants` (its arms: the variants, recorded per send in
`deliveries.variant`) or a split with an `experiment:` block (its arms: the paths and the holdout,
recorded per run in `experiment_assignments` by the `choose_arm` activity). For each arm: the
contacts that got it, how many of them did the metric within the window after getting it, the
rate with its Wilson interval, the uplift and the two-proportion test against the control, the
probability to be best (`cairn.statistics`).

A decision (`experiment: {then: winner}`) is taken by the activities the step calls anyway (the
send's `deliver_message`, the split's `choose_arm`) once every arm has `min_per_arm` contacts and
one arm wins; it is stored once per journey, step and set of arms (`arms_key`) with the figures
it was taken on, and later entrants read it there. A new journey version whose step has other
arms (a variant added, renamed, or its template changed) is a fresh experiment: its figures
leave out the runs of versions with other arms, and an old winner does not carry over.

A goal metric counts an entry that ended by the goal, and a goal event of the contact within the
window that meets the goal's `where` (as the journey version defines it).

A split's holdout stays held out after a decision: it is the control the
winner is measured against, never a winner.

Not here: the arm a contact gets before any decision (`cairn.arms`, pure, used by workflows).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.arms import goal_events
from cairn.conditions import evaluate_event_filter
from cairn.durations import parse_duration
from cairn.journey import HOLDOUT_ARM, ExitGoal, Experiment, Journey, SendStep, SplitStep
from cairn.statistics import Arm, arm_figures, decide_winner, look_confidence
from cairn.store import journeys as journeys_repo
from cairn.store.events import event_message
from cairn.store.schema import (
    Delivery,
    DeliveryFeedback,
    Entry,
    Event,
    ExperimentAssignment,
    ExperimentDecision,
    JourneyVersion,
)

__all__ = [
    "ArmReport", "DecisionView", "ExperimentReport", "Site", "arm_counts", "arms_key",
    "decision_of",
    "experiment_reports", "experiments_of", "goal_events", "take_decision",
]

EXPOSED = ("sent", "unconfirmed")
"""Send statuses that count a contact in its variant's arm (a skipped send showed nothing)."""
DEFAULT_METRIC = Experiment.model_validate({"metric": "clicks"})
"""What a send with `variants` but no `experiment:` is measured on."""
FEEDBACK_KIND = {"clicks": "clicked", "opens": "opened"}


class ArmReport(BaseModel):
    name: str
    template: str | None = Field(default=None, description="a send variant's template")
    control: bool
    contacts: int = Field(description="contacts that got this arm (a send: were sent it)")
    conversions: int = Field(description="of them, how many did the metric within the window")
    rate: float | None
    interval: tuple[float, float] | None = Field(
        description="Wilson interval of the rate at the experiment's confidence")
    uplift: float | None = Field(description="relative to the control's rate: 0.25 = 25 % better")
    p_value: float | None = Field(description="two-sided two-proportion z-test against control")
    probability_to_be_best: float


class DecisionView(BaseModel):
    winner: str
    decided_at: datetime
    reason: str
    metric: str
    figures: list[dict[str, Any]] = Field(description="the arms' figures it was decided on")


class ExperimentReport(BaseModel):
    step: str
    kind: str = Field(description="variants (a send) or split")
    metric: str
    within: str
    confidence: float
    method: str
    automatic: bool = Field(description="`then: winner`: new entrants get the winner")
    min_per_arm: int
    arms: list[ArmReport]
    decision: DecisionView | None
    status: str = Field(description="decided, or why not yet")


@dataclass(frozen=True)
class Exposure:
    """One contact's arm in one run, when it got it, and its send (a variant's)."""

    arm: str
    contact_id: str
    workflow_id: str
    at: datetime
    delivery_id: int | None = None


@dataclass(frozen=True)
class Site:
    """Where an experiment runs: what the figures and a decision need of its journey."""

    journey_key: str
    journey_version: int | None
    step_name: str
    step: SendStep | SplitStep
    experiment: Experiment
    goal_events: tuple[str, ...] = ()

    @classmethod
    def of(cls, journey: Journey, step_name: str) -> Site:
        step = journey.steps[step_name]
        assert isinstance(step, SendStep | SplitStep)
        experiment = (step.send.experiment or DEFAULT_METRIC if isinstance(step, SendStep)
                      else step.split.experiment)
        assert experiment is not None
        return cls(journey.key, journey.version, step_name, step, experiment,
                   goal_events(journey, experiment))


def experiments_of(journey: Journey) -> list[tuple[str, SendStep | SplitStep, Experiment]]:
    """Every experiment of a journey: sends with variants (measured on clicks unless said), and
    splits with an `experiment:` block."""
    found: list[tuple[str, SendStep | SplitStep, Experiment]] = []
    for name, step in journey.steps.items():
        if isinstance(step, SendStep) and step.send.variants:
            found.append((name, step, step.send.experiment or DEFAULT_METRIC))
        elif isinstance(step, SplitStep) and step.split.experiment is not None:
            found.append((name, step, step.split.experiment))
    return found


def _arms(step: SendStep | SplitStep) -> list[tuple[str, str | None]]:
    if isinstance(step, SendStep):
        return [(v.arm, v.template) for v in step.send.variants or []]
    return [(name, None) for name in step.split.arm_names()]


def arms_key(step: SendStep | SplitStep) -> str:
    """What identifies an experiment across journey versions: its arms (a send's variants with
    their templates, a split's path names and holdout). Weights, percents and the metric may
    change and the experiment goes on; a version whose arms differ starts a fresh one (its own
    figures, its own decision)."""
    text = json.dumps(_arms(step), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def _other_arms_versions(s: AsyncSession, journey_key: str, step_name: str,
                               key: str) -> set[int]:
    """The published versions of the journey whose step has other arms (or is no experiment):
    their runs belong to another experiment."""
    others = set()
    for row in (await s.scalars(select(JourneyVersion).where(
            JourneyVersion.key == journey_key))).all():
        try:
            step = journeys_repo.journey_of(row).steps.get(step_name)
        except ValueError:  # a definition an older Cairn accepted: not this experiment
            others.add(row.version)
            continue
        if not isinstance(step, SendStep | SplitStep) or not _arms(step) \
                or arms_key(step) != key:
            others.add(row.version)
    return others


def _control(step: SendStep | SplitStep, experiment: Experiment) -> str:
    if experiment.control:
        return experiment.control
    if isinstance(step, SplitStep):
        return step.split.control_arm()
    return _arms(step)[0][0]


async def _exposures(
    s: AsyncSession, journey_key: str, step_name: str, step: SendStep | SplitStep,
    version: int | None, since: datetime | None, until: datetime | None,
) -> list[Exposure]:
    """The first arm each run got at the step (a loop may pass it again: it counts once)."""
    if isinstance(step, SendStep):
        at = Delivery.sent_at
        query = select(Delivery.variant, Delivery.contact_id, Delivery.workflow_id,
                       Delivery.sent_at, Delivery.id).where(
            Delivery.kind == "send", Delivery.journey_key == journey_key,
            Delivery.step == step_name, Delivery.variant.is_not(None),
            Delivery.status.in_(EXPOSED)).order_by(Delivery.id)
        workflow = Delivery.workflow_id
    else:
        at = ExperimentAssignment.assigned_at
        query = select(ExperimentAssignment.arm, ExperimentAssignment.contact_id,
                       ExperimentAssignment.workflow_id, ExperimentAssignment.assigned_at,
                       ExperimentAssignment.id).where(
            ExperimentAssignment.journey_key == journey_key,
            ExperimentAssignment.step == step_name).order_by(ExperimentAssignment.id)
        workflow = ExperimentAssignment.workflow_id
    if version is not None:
        query = query.where(workflow.in_(select(Entry.workflow_id).where(
            Entry.journey_key == journey_key, Entry.version == version)))
    else:
        # runs of versions whose step had other arms are another experiment's exposures
        others = await _other_arms_versions(s, journey_key, step_name, arms_key(step))
        if others:
            theirs = select(Entry.workflow_id).where(Entry.journey_key == journey_key,
                                                     Entry.version.in_(others))
            ours = select(Entry.workflow_id).where(Entry.journey_key == journey_key,
                                                   Entry.version.not_in(others))
            query = query.where(~and_(workflow.in_(theirs), workflow.not_in(ours)))
    if since is not None:
        query = query.where(at >= since)
    if until is not None:
        query = query.where(at < until)
    seen: set[str] = set()
    found = []
    for arm, contact, wid, moment, row_id in (await s.execute(query)).all():
        if wid in seen or moment is None:
            continue
        seen.add(wid)
        found.append(Exposure(arm, contact or "", wid or "", moment,
                              row_id if isinstance(step, SendStep) else None))
    return found


async def _converted(s: AsyncSession, site: Site, exposures: list[Exposure]) -> set[str]:
    """The workflow ids of the exposures that did the metric within the window."""
    if not exposures:
        return set()
    experiment = site.experiment
    metric = experiment.metric
    if metric.kind in FEEDBACK_KIND:
        ids = [e.delivery_id for e in exposures if e.delivery_id is not None]
        rows = await s.execute(select(DeliveryFeedback.delivery_id).where(
            DeliveryFeedback.kind == FEEDBACK_KIND[metric.kind],
            DeliveryFeedback.delivery_id.in_(ids)).distinct())
        done = {row[0] for row in rows.all()}
        return {e.workflow_id for e in exposures if e.delivery_id in done}
    window = parse_duration(experiment.within)
    names = set(site.goal_events) if metric.kind == "goal" else {metric.name or ""}
    filters = await _goal_filters(s, site) if metric.kind == "goal" else {}
    converted: set[str] = set()
    if metric.kind == "goal":
        wids = [e.workflow_id for e in exposures]
        rows = await s.execute(select(Entry.workflow_id).where(
            Entry.journey_key == site.journey_key, Entry.outcome == metric.name,
            Entry.workflow_id.in_(wids)))
        converted |= {row[0] for row in rows.all()}
    contacts = {e.contact_id for e in exposures}
    times: dict[str, list[datetime]] = defaultdict(list)
    if names:
        events = await s.scalars(select(Event).where(
            and_(Event.name.in_(names), Event.contact_id.in_(contacts))))
        for event in events.all():
            if _meets_goal(event, filters):
                times[event.contact_id or ""].append(event.timestamp)
    for e in exposures:
        if any(e.at <= moment <= e.at + window for moment in times.get(e.contact_id, [])):
            converted.add(e.workflow_id)
    return converted


async def _goal_filters(s: AsyncSession, site: Site) -> dict[str, list[ExitGoal]]:
    """The goal's exit entries by event, as the site's journey version defines them (with
    their `where`)."""
    row = await journeys_repo.get_version(s, site.journey_key, site.journey_version)
    if row is None:
        return {}
    found: dict[str, list[ExitGoal]] = defaultdict(list)
    for goal in journeys_repo.journey_of(row).exit:
        if goal.goal == site.experiment.metric.name:
            found[goal.event].append(goal)
    return found


def _meets_goal(event: Event, filters: dict[str, list[ExitGoal]]) -> bool:
    """Whether a stored event is the goal: one of its exit entries for that event has no
    `where` or its `where` holds on the event (as the router decides it)."""
    goals = filters.get(event.name)
    if not goals:
        return not filters  # the definition is unknown: every event of the goal's name counts
    scope = event_message(event).as_scope()
    return any(goal.where is None
               or evaluate_event_filter(goal.where, scope, event.timestamp).result
               for goal in goals)


async def arm_counts(
    s: AsyncSession, site: Site, *, version: int | None = None,
    since: datetime | None = None, until: datetime | None = None,
) -> list[Arm]:
    """Contacts and conversions per arm of the experiment at the site, control marked."""
    step, experiment = site.step, site.experiment
    exposures = await _exposures(s, site.journey_key, site.step_name, step, version, since,
                                 until)
    converted = await _converted(s, site, exposures)
    contacts: dict[str, int] = defaultdict(int)
    conversions: dict[str, int] = defaultdict(int)
    for e in exposures:
        contacts[e.arm] += 1
        conversions[e.arm] += e.workflow_id in converted
    control = _control(step, experiment)
    return [Arm(name, contacts[name], conversions[name], control=name == control)
            for name, _ in _arms(step)]


async def decision_of(s: AsyncSession, site: Site) -> ExperimentDecision | None:
    """The decision of the site's experiment: the one taken on the same arms, or one recorded
    before decisions named their arms whose winner is still an arm."""
    key = arms_key(site.step)
    names = {name for name, _ in _arms(site.step)}
    rows = (await s.scalars(select(ExperimentDecision).where(
        ExperimentDecision.journey_key == site.journey_key,
        ExperimentDecision.step == site.step_name).order_by(ExperimentDecision.id))).all()
    return (next((row for row in rows if row.arms == key), None)
            or next((row for row in rows if row.arms is None and row.winner in names), None))


def _view(row: ExperimentDecision) -> DecisionView:
    return DecisionView(winner=row.winner, decided_at=row.decided_at, reason=row.reason,
                        metric=row.metric, figures=list(row.figures or []))


def _figure_dict(arm: Any) -> dict[str, Any]:
    return {"name": arm.name, "contacts": arm.contacts, "conversions": arm.conversions,
            "rate": arm.rate, "p_value": arm.p_value,
            "probability_to_be_best": round(arm.probability_to_be_best, 6)}


async def take_decision(s: AsyncSession, site: Site, now: datetime) -> ExperimentDecision | None:
    """The stored winner of the site's automatic experiment, deciding it now if the figures
    allow (the holdout is never a candidate). None while undecided. Commits nothing itself;
    a concurrent decision of another worker wins (the unique key keeps one)."""
    recorded = await decision_of(s, site)
    if recorded is not None:
        return recorded
    experiment = site.experiment
    if not experiment.automatic:
        return None
    arms = [a for a in await arm_counts(s, site) if a.name != HOLDOUT_ARM]
    if len(arms) < 2:
        return None
    level = look_confidence(min(a.contacts for a in arms), experiment.min_per_arm,
                            experiment.confidence)
    if level is None:
        return None
    verdict = decide_winner(arms, experiment.min_per_arm, level, experiment.method)
    if verdict.winner is None:
        return None
    row = ExperimentDecision(
        journey_key=site.journey_key, step=site.step_name, journey_version=site.journey_version,
        winner=verdict.winner, reason=verdict.reason, metric=experiment.metric.describe(),
        figures=[_figure_dict(f) for f in verdict.arms], decided_at=now,
        arms=arms_key(site.step))
    try:
        async with s.begin_nested():
            s.add(row)
    except IntegrityError:
        return await decision_of(s, site)
    return row


async def experiment_reports(
    s: AsyncSession, journey: Journey, *, version: int | None = None,
    since: datetime | None = None, until: datetime | None = None,
) -> list[ExperimentReport]:
    """The figures of every experiment of the journey (the report's `experiments`)."""
    reports = []
    for name, step, experiment in experiments_of(journey):
        site = Site.of(journey, name)
        counts = await arm_counts(s, site, version=version, since=since, until=until)
        figures = {f.name: f for f in arm_figures(counts, experiment.confidence)}
        templates = dict(_arms(step))
        arms = [ArmReport(
            name=f.name, template=templates.get(f.name), control=f.control, contacts=f.contacts,
            conversions=f.conversions, rate=f.rate,
            interval=(f.interval.low, f.interval.high) if f.interval else None,
            uplift=f.uplift, p_value=f.p_value,
            probability_to_be_best=f.probability_to_be_best) for f in figures.values()]
        row = await decision_of(s, site)
        decision = _view(row) if row is not None else None
        reports.append(ExperimentReport(
            step=name, kind="variants" if isinstance(step, SendStep) else "split",
            metric=experiment.metric.describe(), within=experiment.within,
            confidence=experiment.confidence, method=experiment.method,
            automatic=experiment.automatic, min_per_arm=experiment.min_per_arm, arms=arms,
            decision=decision, status=_status(experiment, counts, decision)))
    return reports


def _status(experiment: Experiment, counts: list[Arm], decision: DecisionView | None) -> str:
    if decision is not None:
        return f"decided: {decision.winner} ({decision.reason})"
    candidates = [a for a in counts if a.name != HOLDOUT_ARM]
    if len(candidates) < 2:
        return "measuring (one arm besides the holdout: nothing to decide)"
    if not experiment.automatic:
        verdict = decide_winner(candidates, experiment.min_per_arm, experiment.confidence,
                                experiment.method)
        lead = f"{verdict.winner} would win ({verdict.reason})" if verdict.winner else \
            verdict.reason
        return f"measuring: {lead}"
    smallest = min(a.contacts for a in candidates)
    if smallest < experiment.min_per_arm:
        short = ", ".join(a.name for a in candidates if a.contacts < experiment.min_per_arm)
        return f"deciding: waiting for {experiment.min_per_arm} contacts per arm (short: {short})"
    step = experiment.min_per_arm
    while step <= smallest:
        step *= 2
    leader = max(candidates, key=lambda a: (a.conversions / a.contacts, a.contacts))
    return (f"deciding: {leader.name} leads, no significant winner at the last look; next look "
            f"when the smallest arm reaches {step} contacts")
