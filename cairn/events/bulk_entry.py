"""Bulk entry: many contacts entering one journey together (a schedule's occurrence, an import).

The router enters contacts one event at a time: entry rules read from the entries table, one
row written, one signal-with-start, one `describe` to learn whether it started. Contacts that enter
together (the members of a segment at a schedule's occurrence, the rows of an import) share that
work here instead:

- `plan_entries` applies the trigger filter and the entry rules to the whole batch with one read
  of the entries table, and sorts the events into new entries, refusals, and the few the router
  must decide one by one (concurrent entries, a contact already in a run of the journey, an
  entry an earlier attempt of the batch recorded).
- `record_entries` writes the new entries in one statement.
- `start_runs` starts the new entries' runs side by side. A plain start (not signal-with-start)
  says by itself whether it started the run, so no `describe` follows; when another router got
  there first, the entry is handed to the router, which signals the run in place.
- `inline_path` tells the journeys whose contacts need no run of their own: a path of at most a
  `send` and then `end`. Nothing is left to wait for, so the activity entering the batch sends
  for them itself (`activities.broadcast`) and closes their entries; the ledger row and the
  entry name the run that acted for them (the broadcast's workflow id).

What stays per contact is what differs per contact: the entry rules' verdict, the checks of a send
(reachability, consent, quiet hours, frequency caps), the ledger row that makes the send happen
once. Not here: storing the trigger events (the callers do) and delivery (`activities`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from cairn import search_attributes
from cairn.conditions import evaluate_event_filter
from cairn.durations import parse_duration
from cairn.events.router import TRIGGER_MEMO, RouteDecision, Router
from cairn.journey import END, EndStep, Journey, SendStep
from cairn.journey_run import WORKFLOW_NAME, EventMessage, JourneyInput, event_matches, workflow_id
from cairn.log import get_logger
from cairn.store import entries as entries_repo
from cairn.store.db import Store
from cairn.store.schema import Entry

log = get_logger(__name__)

START_CONCURRENCY = 32
"""Runs started at once by one batch: enough to keep a Temporal frontend busy, few enough that
a batch does not crowd out the routing of live events in the same process."""


@dataclass(frozen=True)
class InlinePath:
    """A journey whose contacts need no run of their own: at most one send, then the end."""

    send_step: str | None
    send: SendStep | None
    outcome: str


def inline_path(journey: Journey) -> InlinePath | None:
    """The journey's path when it is `[send ->] end` with nothing to wait for, else None.

    A send that may be held (quiet hours, a frequency cap) still qualifies: a contact whose send
    is held gets a run of its own at that moment (`activities.broadcast`), the others do not.
    """
    first = journey.first_step
    step = journey.steps.get(first)
    if isinstance(step, EndStep):
        return InlinePath(None, None, _outcome(step))
    if not isinstance(step, SendStep):
        return None
    if step.send.variants:  # each contact's variant (and a decided winner) is chosen in its run
        return None
    after = _end_outcome(journey, step.next)
    failure = step.send.on_failure
    if after is None or (failure is not None and _end_outcome(journey, failure) != after):
        return None
    return InlinePath(first, step, after)


def _end_outcome(journey: Journey, name: str) -> str | None:
    if name == END:
        return "completed"
    step = journey.steps.get(name)
    return _outcome(step) if isinstance(step, EndStep) else None


def _outcome(step: EndStep) -> str:
    return f"ended:{step.end.outcome}" if step.end.outcome else "completed"


@dataclass
class EntryPlan:
    """The batch sorted by what entering means for each contact."""

    new: list[EventMessage] = field(default_factory=list)
    """Entries to record and start (or act for inline)."""
    resumed: list[tuple[EventMessage, Entry]] = field(default_factory=list)
    """Entered by this very event before, entry still open, acted for by a batch (`acting`): an
    earlier attempt of the batch stopped half-way, and the ledger makes redoing it safe."""
    by_router: list[EventMessage] = field(default_factory=list)
    """Decided one by one by the router: concurrent entries, a run of the journey in place, an
    open entry of a run this event started."""
    refused: list[RouteDecision] = field(default_factory=list)
    done: list[EventMessage] = field(default_factory=list)
    """Entered by this event before; that entry is closed: nothing to do."""


async def plan_entries(store: Store, journey: Journey, events: Sequence[EventMessage],
                       *, acting: str | None = None) -> EntryPlan:
    """Apply the trigger filter and entry rules to events of one journey's trigger, one per
    contact, reading the entries table once; the rules as `Router._trigger` applies them."""
    plan = EntryPlan()
    rules = journey.entry
    ids = [e.contact_id for e in events]
    async with store.session() as s:
        history = await entries_repo.entries_for_contacts(s, journey.key, ids)
    for event in events:
        wid = workflow_id(journey.key, event.contact_id)

        def refuse(reason: str, wid: str = wid) -> None:
            plan.refused.append(RouteDecision(journey.key, journey.version, wid, "refused",
                                              reason))

        if journey.trigger.where is not None:
            verdict = evaluate_event_filter(journey.trigger.where, event.as_scope(),
                                            event.timestamp)
            if not verdict.result:
                refuse(f"trigger.where: {verdict.reason}")
                continue
        if rules.reentry == "concurrent":
            plan.by_router.append(event)
            continue
        rows = [e for e in history.get(event.contact_id, [])
                if entries_repo.counts_for_entry_rules(e)]
        earlier = [e for e in rows if e.trigger_message_id == event.message_id]
        if earlier:
            row = earlier[-1]
            if row.ended_at is not None:
                plan.done.append(event)
            elif acting is not None and row.workflow_id == acting:
                plan.resumed.append((event, row))
            else:
                plan.by_router.append(event)
            continue
        if rules.reentry == "never" and rows:
            first = min(rows, key=lambda e: e.entered_at)
            refuse(f"entry: never, entered at {_iso(first.entered_at)}")
            continue
        if any(e.ended_at is None for e in rows):
            plan.by_router.append(event)  # a run in place: the router signals it
            continue
        if rules.min_interval and rows:
            last = max(rows, key=lambda e: e.entered_at)
            if event.timestamp - _aware(last.entered_at) < parse_duration(rules.min_interval):
                refuse(f"entry: min_interval {rules.min_interval}, last entered at "
                       f"{_iso(last.entered_at)}")
                continue
        plan.new.append(event)
    return plan


async def record_entries(s: AsyncSession, journey: Journey, events: Sequence[EventMessage],
                         workflow_id_of: Callable[[EventMessage], str]) -> None:
    """Write the entries of `events` in one statement (open: their runs, or the batch acting
    for them, close them)."""
    assert journey.version is not None, "only published journeys (with a version) are entered"
    rows = [{"journey_key": journey.key, "version": journey.version,
             "contact_id": e.contact_id, "entry_key": None, "workflow_id": workflow_id_of(e),
             "trigger_message_id": e.message_id, "entered_at": e.timestamp} for e in events]
    if rows:
        await s.execute(insert(Entry), rows)


async def close_entries(s: AsyncSession, acting: str, contact_ids: Sequence[str], outcome: str,
                        now: datetime) -> None:
    """Close the open entries a batch acted for (the contacts it finished)."""
    for start in range(0, len(contact_ids), 500):
        await s.execute(
            update(Entry)
            .where(Entry.workflow_id == acting,
                   Entry.contact_id.in_(contact_ids[start:start + 500]),
                   Entry.ended_at.is_(None))
            .values(ended_at=now, outcome=outcome)
            .execution_options(synchronize_session=False))


async def move_entries(s: AsyncSession, acting: str, contact_ids: Sequence[str],
                       journey: Journey) -> None:
    """Hand the entries of these contacts from the batch to their own runs."""
    for cid in contact_ids:
        await s.execute(
            update(Entry)
            .where(Entry.workflow_id == acting, Entry.contact_id == cid, Entry.ended_at.is_(None))
            .values(workflow_id=workflow_id(journey.key, cid))
            .execution_options(synchronize_session=False))


async def start_runs(router: Router, journey: Journey, events: Sequence[EventMessage],
                     *, concurrency: int = START_CONCURRENCY) -> list[RouteDecision]:
    """Start a run for each recorded entry, `concurrency` at a time; one decision each.

    A run already in place under the workflow id (another router entered the contact in the
    meantime) makes the start fail: the entry row is dropped and the router routes the event,
    which signals that run, exactly as signal-with-start would have.
    """
    gate = asyncio.Semaphore(concurrency)

    async def start(event: EventMessage) -> RouteDecision:
        async with gate:
            return await _start_run(router, journey, event)

    return list(await asyncio.gather(*(start(e) for e in events)))


async def _start_run(router: Router, journey: Journey, event: EventMessage) -> RouteDecision:
    wid = workflow_id(journey.key, event.contact_id)
    reference = event.reference(event_matches(journey, event))
    run_input = JourneyInput(
        journey=journey, contact_id=event.contact_id, entry_key=None, trigger=reference,
        clock_offset_seconds=router.clock_offset.total_seconds(),
        delivery_task_queue=router.delivery_task_queue,
    )
    attributes = TypedSearchAttributes([
        SearchAttributePair(search_attributes.JOURNEY, journey.key),
        SearchAttributePair(search_attributes.CONTACT, event.contact_id),
        SearchAttributePair(search_attributes.VERSION, journey.version or 0),
        SearchAttributePair(search_attributes.STEP, journey.first_step),
    ])
    try:
        await router.client.start_workflow(
            WORKFLOW_NAME, run_input, id=wid, task_queue=router.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=attributes, memo={TRIGGER_MEMO: event.message_id},
            static_summary=f"{journey.name} for {event.contact_id}",
        )
    except WorkflowAlreadyStartedError:
        async with router.store.session() as s, s.begin():
            await s.execute(delete(Entry).where(
                Entry.workflow_id == wid, Entry.trigger_message_id == event.message_id,
                Entry.ended_at.is_(None)))
        decision = await router.enter_journey(journey.key, event)
        return decision or RouteDecision(journey.key, journey.version, wid, "refused",
                                         "the journey is no longer published")
    return RouteDecision(journey.key, journey.version, wid, "started",
                         f"trigger {journey.trigger.describe()} matched; entered with its batch")


async def route_one_by_one(router: Router, events: Sequence[EventMessage],
                           *, concurrency: int = START_CONCURRENCY) -> list[RouteDecision]:
    """Route these events through the router itself (the cases bulk entry leaves to it)."""
    gate = asyncio.Semaphore(concurrency)

    async def route(event: EventMessage) -> list[RouteDecision]:
        async with gate:
            return await router.route(event)

    return [d for found in await asyncio.gather(*(route(e) for e in events)) for d in found]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return _aware(moment).isoformat().replace("+00:00", "Z")


__all__ = [
    "START_CONCURRENCY",
    "EntryPlan",
    "InlinePath",
    "close_entries",
    "inline_path",
    "move_entries",
    "plan_entries",
    "record_entries",
    "route_one_by_one",
    "start_runs",
]
