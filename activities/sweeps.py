"""The batch work of the sweeps: one batch of contacts decided, its events stored and routed.

Each activity reads the contacts after a cursor (keyset pagination by contact id), stores the
events the batch produces with deterministic message ids, then routes them through the same path
as ingested events (`Ingest.route_events`: scoring and segments first, then the router). So a
`segment_entered` from the sweep scores its decay rule and starts its journeys exactly as one from
an API call would. Redoing a batch (a retry after a crash) stores nothing twice and routes what the
earlier attempt left unrouted; a routing failure fails the batch so Temporal retries it, and the
relay routes anything still left.

The activities also run without Temporal (the benchmark calls them directly): outside an activity
there is no client, so events are stored but left for the relay to route.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from cairn.conditions import ConditionScope, HasDone, ReachableSpec, Verdict
from cairn.contact import ContactSnapshot
from cairn.durations import parse_duration, parse_time_of_day
from cairn.journey import TRIGGER_EVENTS, DateAttributeTrigger, Journey
from cairn.journey_run import EventMessage
from cairn.local_time import TimezoneError, at_local, zone
from cairn.log import get_logger
from cairn.reachability import reachability
from cairn.scoring import Scoring
from cairn.segments import Segment, decide, time_based
from cairn.store import events as events_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Contact, Event, Score, SegmentMembership
from starter.audience import Audience
from starter.ingest import Ingest
from starter.router import Router
from workflows.sweeps import (
    ENTER_SCHEDULED,
    SWEEP_DATE_ATTRIBUTES,
    SWEEP_SEGMENTS,
    SweepBatch,
    SweepBatchResult,
    SweepConfig,
)

log = get_logger(__name__)

SWEEP_EVENT_TYPE = "sweep"
"""The `type` of events the date and schedule sweeps store (beside track, identify, audience)."""

SEGMENT_SWEEP_EVENT = "segment_sweep"
"""The name of the (never stored) event a segment sweep decides each contact under."""

DATE_WINDOW = timedelta(days=1)
"""How long after its local due moment a date trigger may still fire: an hourly sweep that was
down for a while catches up, and a contact is never reached on the wrong day."""


class SweepRoutingError(RuntimeError):
    """Events of a batch could not be routed (Temporal unreachable?); the batch is retried."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class SweepActivities:
    """Sweep batches over the store; `router` overrides the one built from the activity's client."""

    def __init__(self, store: Store, *, router: Router | None = None) -> None:
        self.store = store
        self.router = router

    # ------------------------------------------------------------------ segments

    @activity.defn(name=SWEEP_SEGMENTS)
    async def sweep_segments(self, batch: SweepBatch) -> SweepBatchResult:
        """Re-decide the time-based segments of one batch of contacts at `batch.now`.

        Only time-based segments (and those reading them) are decided: event-driven ones are kept
        current by ingest. Each contact is decided by `Audience.apply` under a sweep message id, so
        entries, exits and their events are recorded in one transaction per contact.
        """
        audience = Audience.from_folder(self.store, Path(batch.config.journeys_dir))
        timed = time_based(audience.segments)
        ids = await self._contact_ids(batch)
        if not timed:
            return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None)
        segments = [s for s in audience.segments if s.key in timed]
        judge = Audience(self.store, segments, Scoring(files=[]))
        emitted = 0
        for contact_id in await self._changing(segments, ids, batch.now):
            emitted += len(await judge.apply(EventMessage(
                message_id=_sweep_message_id(batch.sweep_id, contact_id),
                event=SEGMENT_SWEEP_EVENT, contact_id=contact_id, timestamp=batch.now,
            )))
        # Also what an earlier attempt of this batch stored but did not route.
        async with self.store.session() as s:
            pending = list(await s.scalars(
                select(Event.id).where(
                    Event.contact_id.in_(ids), Event.routed_at.is_(None),
                    Event.message_id.startswith(f"sweep/{batch.sweep_id}/", autoescape=True),
                ).order_by(Event.id)
            ))
        routed = await self._route(batch.config, audience, pending)
        log.info("sweep.segments.batch", sweep=batch.sweep_id, after=batch.after,
                 contacts=len(ids), emitted=emitted, routed=routed)
        return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                emitted=emitted, routed=routed)

    async def _changing(self, segments: list[Segment], ids: list[str], now: datetime) -> list[str]:
        """The contacts of a batch whose membership of `segments` changes at `now`.

        A read-only pass in one session: most contacts change nothing in a given hour, and
        deciding them without a write transaction each is what keeps a sweep over everyone cheap.
        The contacts found are decided again by `Audience.apply`, in their own transaction, so a
        change made meanwhile by ingest is respected.
        """
        changing: list[str] = []
        async with self.store.session() as s:
            snapshots = await _snapshots(s, ids)
            for contact_id in ids:
                contact = snapshots.get(contact_id)
                if contact is None:
                    continue
                before = set(contact.segments)
                scope = ConditionScope(
                    now=now,
                    count_events=partial(_count, s, contact_id, now),
                    sum_events=partial(_sum, s, contact_id, now),
                    reachable=partial(_reachable, contact),
                )
                for decided in await decide(segments, contact, scope):
                    if decided.member != (decided.segment in before):
                        changing.append(contact_id)
                        break
        return changing

    # ------------------------------------------------------------------ date attributes

    @activity.defn(name=SWEEP_DATE_ATTRIBUTES)
    async def sweep_date_attributes(self, batch: SweepBatch) -> SweepBatchResult:
        """Emit `date_attribute_reached` for contacts of the batch whose date trigger is due now.

        Message ids are `date/<journey>/<contact>/<due date>`: the hourly runs of one day, and a
        retried batch, store each (journey, contact, date) once.
        """
        journeys = [j for j in await self._published() if j.trigger.date_attribute is not None]
        async with self.store.session() as s:
            contacts = list(await s.scalars(self._page(select(Contact), Contact.id, batch)))
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for journey in journeys:
            trigger = journey.trigger.date_attribute
            assert trigger is not None
            for contact in contacts:
                due = due_date(trigger, contact.attributes or {}, contact.timezone,
                               journey.settings.timezone, batch.now)
                if due is None:
                    continue
                rows.append((
                    f"date/{journey.key}/{contact.id}/{due.isoformat()}", contact.id,
                    {"attribute": trigger.attribute, "journey": journey.key,
                     "date": due.isoformat()},
                ))
        return await self._emit(batch, TRIGGER_EVENTS["date_attribute"], rows,
                                [c.id for c in contacts])

    # ------------------------------------------------------------------ schedules

    @activity.defn(name=ENTER_SCHEDULED)
    async def enter_scheduled(self, batch: SweepBatch) -> SweepBatchResult:
        """Emit `schedule_fired` for one batch of the audience of a journey's schedule occurrence.

        The audience is the open members of `batch.segment`, or every contact; message ids are
        `schedule/<journey>/<occurrence>/<contact>`, so an occurrence run twice enters no one twice.
        """
        assert batch.journey is not None, "a schedule batch names its journey"
        occurrence = batch.now.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if batch.segment is None:
            query = self._page(select(Contact.id), Contact.id, batch)
        else:
            query = self._page(
                select(SegmentMembership.contact_id).distinct().where(
                    SegmentMembership.segment == batch.segment,
                    SegmentMembership.exited_at.is_(None),
                ),
                SegmentMembership.contact_id, batch,
            )
        async with self.store.session() as s:
            ids = list(await s.scalars(query))
        rows = [(f"schedule/{batch.journey}/{occurrence}/{cid}", cid,
                 {"journey": batch.journey, "occurrence": occurrence}) for cid in ids]
        return await self._emit(batch, TRIGGER_EVENTS["schedule"], rows, ids)

    # ------------------------------------------------------------------ shared

    @staticmethod
    def _page(query: Any, column: Any, batch: SweepBatch) -> Any:
        """Keyset pagination: the next `batch_size` ids after the cursor, in id order."""
        if batch.after is not None:
            query = query.where(column > batch.after)
        return query.order_by(column).limit(batch.config.batch_size)

    async def _contact_ids(self, batch: SweepBatch) -> list[str]:
        async with self.store.session() as s:
            return list(await s.scalars(self._page(select(Contact.id), Contact.id, batch)))

    async def _published(self) -> list[Journey]:
        async with self.store.session() as s:
            return [journeys_repo.journey_of(row) for row in await journeys_repo.published(s)]

    async def _emit(self, batch: SweepBatch, name: str, rows: list[tuple[str, str, dict[str, Any]]],
                    ids: list[str]) -> SweepBatchResult:
        """Store the batch's events in one transaction, then route every one not yet routed."""
        emitted = 0
        pending: list[int] = []
        async with self.store.session() as s, s.begin():
            for message_id, contact_id, properties in rows:
                row, new = await events_repo.record_event(
                    s, message_id=message_id, type=SWEEP_EVENT_TYPE, contact_id=contact_id,
                    name=name, properties=properties, timestamp=batch.now, received_at=utc_now(),
                )
                emitted += int(new)
                if row.routed_at is None:
                    pending.append(row.id)
        audience = Audience.from_folder(self.store, Path(batch.config.journeys_dir))
        routed = await self._route(batch.config, audience, pending)
        log.info("sweep.batch", sweep=batch.sweep_id, event_name=name, journey=batch.journey,
                 after=batch.after, contacts=len(ids), emitted=emitted, routed=routed)
        return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                emitted=emitted, routed=routed)

    async def _route(self, config: SweepConfig, audience: Audience, event_ids: list[int]) -> int:
        """Route stored events like ingested ones; raise when some could not be routed."""
        router = self.router
        if router is None and activity.in_activity():
            router = Router(activity.client(), self.store, task_queue=config.journey_task_queue,
                            delivery_task_queue=config.delivery_task_queue)
        if router is None or not event_ids:
            return 0  # outside Temporal: the relay routes them
        done = await Ingest(self.store, router, audience=audience).route_events(event_ids)
        left = [i for i in event_ids if i not in done]
        if left:
            async with self.store.session() as s:
                still = await _unrouted(s, left)
            if still:
                raise SweepRoutingError(
                    f"{len(still)} event(s) of this batch could not be routed (first id "
                    f"{still[0]}); the batch is retried, and the relay routes them meanwhile"
                )
        return len(done)


async def _unrouted(s: AsyncSession, event_ids: list[int]) -> list[int]:
    return list(await s.scalars(
        select(Event.id).where(Event.id.in_(event_ids), Event.routed_at.is_(None))
    ))


async def _snapshots(s: AsyncSession, ids: list[str]) -> dict[str, ContactSnapshot]:
    """The batch's contacts as `contacts.snapshot` reads them, in three queries instead of three
    per contact (reading them one by one was two thirds of a sweep's time)."""
    segments: dict[str, list[str]] = {cid: [] for cid in ids}
    for contact_id, segment in await s.execute(
        select(SegmentMembership.contact_id, SegmentMembership.segment).distinct().where(
            SegmentMembership.contact_id.in_(ids), SegmentMembership.exited_at.is_(None))
    ):
        segments[contact_id].append(segment)
    scores: dict[str, dict[str, int]] = {cid: {} for cid in ids}
    for contact_id, dimension, total in await s.execute(
        select(Score.contact_id, Score.dimension, Score.total).where(Score.contact_id.in_(ids))
    ):
        scores[contact_id][dimension] = int(total)
    found = {}
    for contact in await s.scalars(select(Contact).where(Contact.id.in_(ids))):
        found[contact.id] = ContactSnapshot(
            id=contact.id, timezone=contact.timezone, email=contact.email, phone=contact.phone,
            push_tokens=[str(t) for t in contact.push_tokens or [] if t],
            web_push=[sub for sub in contact.web_push or []
                      if isinstance(sub, dict) and isinstance(sub.get("endpoint"), str)],
            consent=dict(contact.consent or {}),
            suppressed=[str(c) for c in contact.suppressed or []],
            attributes=dict(contact.attributes or {}), tags=[str(t) for t in contact.tags or []],
            scores=scores[contact.id], segments=sorted(segments[contact.id]),
            first_seen_at=contact.first_seen_at, last_seen_at=contact.last_seen_at,
        )
    return found


# The same counting `Audience` does on ingest, so a sweep decides exactly as an event would.
async def _count(s: AsyncSession, contact_id: str, now: datetime, spec: HasDone) -> int:
    return await Audience._count(s, contact_id, spec, now)


async def _sum(s: AsyncSession, contact_id: str, now: datetime, spec: HasDone) -> float:
    return await Audience._sum(s, contact_id, spec, now)


def _reachable(contact: ContactSnapshot, spec: ReachableSpec) -> Verdict:
    return reachability(contact, spec.channel, spec.category)


def _sweep_message_id(sweep_id: str, contact_id: str) -> str:
    return f"sweep/{sweep_id}/{contact_id}"


# --------------------------------------------------------------------------- date arithmetic


def parse_date(value: Any) -> date | None:
    """A date attribute as a date: `1990-05-17`, an ISO datetime, or a date object."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _anniversary(original: date, year: int) -> date:
    """The date in `year` with the month and day of `original`; 29 February falls on the 28th."""
    try:
        return original.replace(year=year)
    except ValueError:
        return original.replace(year=year, day=28)


def due_date(
    trigger: DateAttributeTrigger,
    attributes: dict[str, Any],
    timezone: str | None,
    default_timezone: str,
    now: datetime,
) -> date | None:
    """The local date the trigger fires on for this contact, if it is due at `now`; else None.

    Due means: the moment `date + offset` at the trigger's local `time`, in the contact's zone
    (the journey's when the contact has none), is in `[now - 1 day, now]`. `yearly` takes the
    date's anniversaries instead of the date itself (birthdays).
    """
    original = parse_date(attributes.get(trigger.attribute))
    if original is None:
        return None
    try:
        tz = zone(timezone, default_timezone)
    except TimezoneError:
        tz = zone(None, default_timezone)
    offset = parse_duration(trigger.offset)
    clock = parse_time_of_day(trigger.time)
    local_year = now.astimezone(tz).year
    anchors = ([_anniversary(original, year) for year in range(local_year - 1, local_year + 2)]
               if trigger.yearly else [original])
    for anchor in anchors:
        moment = at_local(anchor, clock, tz) + offset
        if now - DATE_WINDOW < moment <= now:
            return moment.astimezone(tz).date()
    return None


__all__ = [
    "DATE_WINDOW",
    "SEGMENT_SWEEP_EVENT",
    "SWEEP_EVENT_TYPE",
    "SweepActivities",
    "SweepRoutingError",
    "due_date",
    "parse_date",
]
