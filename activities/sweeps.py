"""The batch work of the sweeps: one batch of contacts decided, its events stored and routed.

Each activity reads the contacts after a cursor (keyset pagination by contact id), stores the
events the batch produces with deterministic message ids, then routes them through the same path
as ingested events (`Ingest.route_events`: scoring and segments first, then the router). So a
`segment_entered` from the sweep scores its decay rule and starts its journeys exactly as one from
an API call would. Redoing a batch (a retry after a crash) stores nothing twice and routes what the
earlier attempt left unrouted; a routing failure fails the batch so Temporal retries it, and the
relay routes anything still left.

The segment sweep also applies the scoring rules' inactivity decays (`-10 after 7 days without
login`): only a sweep can notice an absence. Each is keyed per rule, contact and inactivity period
in the score history, so it applies once per period however often the sweep runs or retries.

The activities also run without Temporal (the benchmark calls them directly): outside an activity
there is no client, so events are stored but left for the relay to route.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Row, and_, case, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from cairn.catalog_folder import current_profile_rules
from cairn.conditions import (
    ConditionScope,
    HasDone,
    ReachableSpec,
    Verdict,
    evaluate_event_filter,
    event_field,
)
from cairn.conditions import window_start as has_done_window
from cairn.contact import ContactSnapshot
from cairn.date_triggers import (
    SWEEP_EVENT_TYPE,
    date_trigger_event,
    due_date,
    schedule_trigger_event,
)
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import PROFILE_RULES_EVENT_TYPE, ProfileRules
from cairn.events.router import Router
from cairn.journey import TRIGGER_EVENTS, Journey
from cairn.journey_run import EventMessage
from cairn.log import get_logger
from cairn.reachability import reachability
from cairn.scoring import (
    SCORE_CROSSED,
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    InactivityDecay,
    crossings,
)
from cairn.segments import (
    Memo,
    Segment,
    decide,
    has_done_specs,
    members,
    time_based,
)
from cairn.store import events as events_repo
from cairn.store import journeys as journeys_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.store.schema import Contact, Event, Score, SegmentMembership, as_utc
from cairn.sweeps import (
    ENTER_SCHEDULED,
    SWEEP_DATE_ATTRIBUTES,
    SWEEP_SEGMENTS,
    SweepBatch,
    SweepBatchResult,
    SweepConfig,
)

log = get_logger(__name__)

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
        """Re-decide time-based segments and apply inactivity decays for one batch at `batch.now`.

        Only time-based segments (and those reading them) are decided: event-driven ones are kept
        current by ingest. A read-only pass finds the contacts that change (set-based: a few
        queries for the whole batch); only those get a write, one transaction for all of them,
        decided again under their locks (`_write_changes`). Each contact is judged at
        `batch.now`, or at their latest activity when that is later (`_moment`).
        """
        audience = self._audience(batch.config)
        timed_keys = time_based(audience.segments)
        timed = [s for s in audience.segments if s.key in timed_keys]
        decays = audience.scoring.inactivity_decays()
        async with self.store.session() as s:
            rows = list((await s.execute(
                self._page(select(*_CONTACT_COLUMNS), Contact.id, batch))).all())
            ids = [row.id for row in rows]
            changing: list[str] = []
            if ids and (timed or decays):
                changing = await _changing(s, timed, decays, rows, batch.now)
        emitted = 0
        if changing:
            emitted = await self._write_changes(batch, audience, timed, decays, changing)
        # Also what an earlier attempt of this batch stored but did not route.
        pending: list[int] = []
        if ids:
            async with self.store.session() as s:
                pending = list(await s.scalars(
                    select(Event.id).where(
                        Event.contact_id.in_(ids), Event.routed_at.is_(None),
                        Event.message_id.startswith(f"sweep/{batch.sweep_id}/", autoescape=True),
                    ).order_by(Event.id)
                ))
        routed = await self._route(batch.config, audience, pending)
        log.info("sweep.segments.batch", sweep=batch.sweep_id, after=batch.after,
                 contacts=len(ids), changing=len(changing), emitted=emitted, routed=routed)
        return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                emitted=emitted, routed=routed)

    async def _write_changes(self, batch: SweepBatch, audience: ProfileRules, timed: list[Segment],
                             decays: list[InactivityDecay], contact_ids: list[str]) -> int:
        """Apply the changes of `contact_ids` in one transaction; returns the events stored.

        Decays are found again and scored first (their keys make a redone batch score nothing
        twice); then the contacts are locked and read fresh, so a change ingest made since the
        read-only pass is respected, and decided: the time-based segments, or every segment for a
        contact whose score just decayed (a segment may read the score, as an event's scoring
        would re-decide it). Memberships and events are written in bulk. Scores go first because
        ingest scores before it locks a contact: the same order cannot deadlock on PostgreSQL.
        """
        now, prefix = batch.now, f"sweep/{batch.sweep_id}"
        events: list[dict[str, Any]] = []
        decayed: set[str] = set()
        async with self.store.session() as s, s.begin():
            if decays:
                rows = list((await s.execute(
                    select(*_CONTACT_COLUMNS).where(Contact.id.in_(contact_ids)))).all())
                due = await _due_decays(s, decays, rows, now)
                changes = [scores_repo.ScoreChange(
                    contact_id=d.contact_id, dimension=d.decay.rule.dimension,
                    delta=d.decay.rule.add, reason=d.decay.says(),
                    source=f"sweep:{batch.sweep_id}", idempotency_key=d.key, at=d.at,
                ) for d in due]
                totals = await scores_repo.change_scores(s, changes)
                for d, change in zip(due, changes, strict=True):
                    total = totals.get(change.idempotency_key)
                    if total is None:
                        continue  # recorded by an earlier attempt
                    decayed.add(d.contact_id)
                    log.info("sweep.decayed", contact=d.contact_id, rule=d.decay.id,
                             since=d.since.isoformat(), delta=change.delta, total=total)
                    for crossing in crossings(change.dimension, total - change.delta, total,
                                              audience.scoring.thresholds(change.dimension)):
                        events.append(_audience_event(
                            f"{prefix}/{d.contact_id}/{SCORE_CROSSED}/{d.decay.id}/"
                            f"{crossing.threshold}", d.contact_id, SCORE_CROSSED,
                            {"dimension": crossing.dimension, "threshold": crossing.threshold,
                             "direction": crossing.direction, "total": crossing.total}, now))
            await segments_repo.lock_contacts(s, contact_ids)
            fresh = await _snapshots(s, list((await s.execute(
                select(*_CONTACT_COLUMNS).where(Contact.id.in_(contact_ids))
                .order_by(Contact.id))).all()))
            entered: list[tuple[str, str, datetime]] = []
            exited: list[tuple[str, str, datetime]] = []
            for moment, group in _by_moment(fresh, now).items():
                everything = any(contact.id in decayed for contact in group)
                history = BatchHistory(s, [c.id for c in group], moment,
                                       has_done_specs(audience.segments if everything else timed))
                for contact in group:
                    segments = audience.segments if contact.id in decayed else timed
                    before = set(contact.segments)
                    scope = history.scope(contact, moment)
                    for decided in await decide(segments, contact, scope):
                        if decided.member == (decided.segment in before):
                            continue
                        name = SEGMENT_ENTERED if decided.member else SEGMENT_EXITED
                        moved = (contact.id, decided.segment, moment)
                        (entered if decided.member else exited).append(moved)
                        log.info("sweep.segment", contact=contact.id, change=name,
                                 segment=decided.segment, reason=decided.reason)
                        events.append(_audience_event(
                            f"{prefix}/{contact.id}/{name}/{decided.segment}", contact.id,
                            name, {"segment": decided.segment}, now))
            await segments_repo.record_changes(s, entered, exited)
            return await _store_new_events(s, events)

    def _audience(self, config: SweepConfig) -> ProfileRules:
        """The catalog's segments and scoring rules, parsed again only when a file changed."""
        segments, scoring = current_profile_rules(Path(config.journeys_dir))
        return ProfileRules(self.store, segments, scoring)

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
                message_id, properties = date_trigger_event(journey.key, trigger, contact.id, due)
                rows.append((message_id, contact.id, properties))
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
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for cid in ids:
            message_id, properties = schedule_trigger_event(batch.journey, batch.now, cid)
            rows.append((message_id, cid, properties))
        return await self._emit(batch, TRIGGER_EVENTS["schedule"], rows, ids)

    # ------------------------------------------------------------------ shared

    @staticmethod
    def _page(query: Any, column: Any, batch: SweepBatch) -> Any:
        """Keyset pagination: the next `batch_size` ids after the cursor, in id order."""
        if batch.after is not None:
            query = query.where(column > batch.after)
        return query.order_by(column).limit(batch.config.batch_size)

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
        routed = await self._route(batch.config, self._audience(batch.config), pending)
        log.info("sweep.batch", sweep=batch.sweep_id, event_name=name, journey=batch.journey,
                 after=batch.after, contacts=len(ids), emitted=emitted, routed=routed)
        return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                emitted=emitted, routed=routed)

    async def _route(self, config: SweepConfig, rules: ProfileRules,
                     event_ids: list[int]) -> int:
        """Route stored events like ingested ones; raise when some could not be routed."""
        router = self.router
        if router is None and activity.in_activity():
            router = Router(activity.client(), self.store, task_queue=config.journey_task_queue,
                            delivery_task_queue=config.delivery_task_queue)
        if router is None or not event_ids:
            return 0  # outside Temporal: the relay routes them
        done = await Ingest(self.store, router, profile_rules=rules).route_events(event_ids)
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


_CONTACT_COLUMNS = (
    Contact.id, Contact.timezone, Contact.email, Contact.phone, Contact.push_tokens,
    Contact.web_push, Contact.consent, Contact.suppressed, Contact.attributes, Contact.tags,
    Contact.first_seen_at, Contact.last_seen_at, Contact.created_at,
)
"""What a sweep reads of a contact: the snapshot's columns, and `created_at` for decays."""


async def _changing(s: AsyncSession, timed: list[Segment], decays: list[InactivityDecay],
                    rows: list[Row[Any]], now: datetime) -> list[str]:
    """The contacts of a batch that change at `now`: a decay due, or a time-based segment.

    A read-only pass in one session: most contacts change nothing in a given hour, and deciding
    them with a few queries for the whole batch (memberships, scores, one per `has_done` rule,
    one per decay) and without reasons (`members`) is what keeps a sweep over everyone cheap.
    """
    changing = {due.contact_id for due in await _due_decays(s, decays, rows, now)}
    if timed:
        contacts = await _snapshots(s, rows)
        specs = has_done_specs(timed)
        for moment, group in _by_moment(contacts, now).items():
            history = BatchHistory(s, [c.id for c in group], moment, specs)
            memo: Memo = {}  # one moment, one set of definitions: verdicts shared by the group
            for contact in group:
                if contact.id in changing:
                    continue
                before = set(contact.segments)
                decided = await members(timed, contact, history.scope(contact, moment), memo)
                if any(member != (key in before) for key, member in decided.items()):
                    changing.add(contact.id)
    return sorted(changing)


def _moment(last_seen_at: datetime | None, now: datetime) -> datetime:
    """When a contact is judged: the sweep's moment, or their latest activity if it is later.

    As ingest decides (`ProfileRules`): a contact active since the sweep began is judged as of
    that activity, so the sweep never undoes what their newer events established (a login after
    `now` keeps them out of `about_to_churn`, and spares them a decay for no login).
    """
    seen = as_utc(last_seen_at)
    return seen if seen is not None and seen > now else now


def _by_moment(contacts: dict[str, ContactSnapshot],
               now: datetime) -> dict[datetime, list[ContactSnapshot]]:
    """Contacts grouped by the moment they are judged at: nearly all of them at `now`."""
    groups: dict[datetime, list[ContactSnapshot]] = {}
    for contact in contacts.values():
        groups.setdefault(_moment(contact.last_seen_at, now), []).append(contact)
    return groups


@dataclass(frozen=True)
class _Due:
    """An inactivity decay due for a contact: the period it closes and when it was judged."""

    contact_id: str
    decay: InactivityDecay
    since: datetime
    at: datetime

    @property
    def key(self) -> str:
        return self.decay.key(self.contact_id, self.since)


async def _due_decays(s: AsyncSession, decays: list[InactivityDecay], rows: list[Row[Any]],
                      now: datetime) -> list[_Due]:
    """Every inactivity decay due for the batch's contacts and not yet recorded.

    A period starts at the contact's last `without` event at or before the moment the contact is
    judged (one grouped query per event name for the batch, and one per contact judged later
    than `now`), or when the contact was first seen (created, if never seen).
    """
    if not decays or not rows:
        return []
    ids = [row.id for row in rows]
    moments = {row.id: _moment(row.last_seen_at, now) for row in rows}
    last: dict[str, dict[str, datetime]] = {}
    for event in sorted({decay.event for decay in decays}):
        found = last[event] = {}
        for contact_id, at in await s.execute(
            select(Event.contact_id, func.max(Event.timestamp)).where(
                Event.contact_id.in_(ids), Event.name == event, Event.timestamp <= now,
            ).group_by(Event.contact_id)
        ):
            moment = as_utc(at)
            if moment is not None:
                found[contact_id] = moment
        for contact_id, judged in moments.items():
            if judged > now:  # active since the sweep began: their later events count too
                later = as_utc(await s.scalar(select(func.max(Event.timestamp)).where(
                    Event.contact_id == contact_id, Event.name == event,
                    Event.timestamp <= judged)))
                if later is not None:
                    found[contact_id] = later
    due: list[_Due] = []
    for row in rows:
        for decay in decays:
            since = last[decay.event].get(row.id) or as_utc(row.first_seen_at or row.created_at)
            if since is not None and decay.due(since, moments[row.id]):
                due.append(_Due(row.id, decay, since, moments[row.id]))
    recorded = await scores_repo.recorded_keys(s, (d.key for d in due))
    return [d for d in due if d.key not in recorded]


async def _snapshots(s: AsyncSession, rows: list[Row[Any]]) -> dict[str, ContactSnapshot]:
    """The batch's contacts as `contacts.snapshot` reads them, from rows already read, with two
    more queries (memberships, scores) for the whole batch instead of three per contact."""
    ids = [row.id for row in rows]
    segments = await segments_repo.open_memberships(s, ids)
    scores: dict[str, dict[str, int]] = {cid: {} for cid in ids}
    for contact_id, dimension, total in await s.execute(
        select(Score.contact_id, Score.dimension, Score.total).where(Score.contact_id.in_(ids))
    ):
        scores[contact_id][dimension] = int(total)
    return {row.id: ContactSnapshot(
        id=row.id, timezone=row.timezone, email=row.email, phone=row.phone,
        push_tokens=[str(t) for t in row.push_tokens or [] if t],
        web_push=[sub for sub in row.web_push or []
                  if isinstance(sub, dict) and isinstance(sub.get("endpoint"), str)],
        consent=dict(row.consent or {}),
        suppressed=[str(c) for c in row.suppressed or []],
        attributes=dict(row.attributes or {}), tags=[str(t) for t in row.tags or []],
        scores=scores[row.id], segments=segments.get(row.id, []),
        first_seen_at=row.first_seen_at, last_seen_at=row.last_seen_at,
    ) for row in rows}


class BatchHistory:
    """`has_done` counts and sums for a batch of contacts, in two queries for the whole batch.

    Decides exactly as `ProfileRules` does for one contact (same window, both ends inclusive, the
    same `where` evaluation and the same summing). The rules of `specs` are answered together on
    the first question: one `GROUP BY contact` query counts for every rule without `where` and
    `sum` (a conditional count per rule), and one query reads the rows of the events the other
    rules filter or sum, each row turned into an event scope once and dealt out to its rules.
    A rule not in `specs` gets a query of its own when first asked about.
    """

    def __init__(self, s: AsyncSession, contact_ids: list[str], now: datetime,
                 specs: Iterable[HasDone] = ()) -> None:
        self.s = s
        self.ids = contact_ids
        self.now = now
        self._planned = list({id(spec): spec for spec in specs}.values())
        self._counts: dict[int, tuple[HasDone, dict[str, int]]] = {}
        self._events: dict[int, tuple[HasDone, dict[str, list[dict[str, Any]]]]] = {}

    def scope(self, contact: ContactSnapshot, now: datetime) -> ConditionScope:
        return ConditionScope(
            now=now,
            count_events=partial(self.count, contact.id),
            sum_events=partial(self.sum, contact.id),
            reachable=partial(_reachable, contact),
        )

    async def count(self, contact_id: str, spec: HasDone) -> int:
        if self._planned:
            await self._load_planned()
        if _reads_rows(spec):
            return len((await self._matching(spec)).get(contact_id, ()))
        cached = self._counts.get(id(spec))
        if cached is None:
            await self._count_all([spec])
            cached = self._counts[id(spec)]
        return cached[1].get(contact_id, 0)

    async def sum(self, contact_id: str, spec: HasDone) -> float:
        assert spec.sum is not None  # evaluate only asks for sums of has_done with `sum`
        total = 0.0
        for scope in (await self._matching(spec)).get(contact_id, ()):
            value = event_field(scope, spec.sum)
            if isinstance(value, int | float) and not isinstance(value, bool):
                total += value
        return total

    async def _load_planned(self) -> None:
        planned, self._planned = self._planned, []
        counted = [spec for spec in planned if not _reads_rows(spec)]
        if counted:
            await self._count_all(counted)
        rowed = [spec for spec in planned if _reads_rows(spec)]
        if rowed:
            await self._read_all(rowed)

    async def _matching(self, spec: HasDone) -> dict[str, list[dict[str, Any]]]:
        """The batch's events `spec` counts, as event scopes per contact (filtered by `where`)."""
        if self._planned:
            await self._load_planned()
        if id(spec) not in self._events:
            await self._read_all([spec])
        return self._events[id(spec)][1]

    async def _count_all(self, specs: list[HasDone]) -> None:
        """One query: per contact, how many events each rule of `specs` counts."""
        query = select(Event.contact_id, *[
            func.sum(case((self._counted_by(spec), 1), else_=0)) for spec in specs
        ]).where(self._events_of(specs)).group_by(Event.contact_id)
        found: list[dict[str, int]] = [{} for _ in specs]
        for row in await self.s.execute(query):
            for index, counted in enumerate(row[1:]):
                if counted:
                    found[index][row[0]] = int(counted)
        for spec, counts in zip(specs, found, strict=True):
            self._counts[id(spec)] = (spec, counts)

    async def _read_all(self, specs: list[HasDone]) -> None:
        """One query: the rows of the events `specs` read, dealt out to the rules matching them."""
        found: list[dict[str, list[dict[str, Any]]]] = [{} for _ in specs]
        windows = [has_done_window(spec, self.now, None) for spec in specs]
        query = select(Event.contact_id, Event.message_id, Event.name, Event.properties,
                       Event.timestamp).where(self._events_of(specs)).order_by(Event.id)
        for row in await self.s.execute(query):
            scope: dict[str, Any] | None = None
            for index, spec in enumerate(specs):
                since = windows[index]
                if spec.event != row.name or (since is not None and row.timestamp < since):
                    continue
                if scope is None:
                    scope = EventMessage(message_id=row.message_id, event=row.name,
                                         contact_id=row.contact_id,
                                         properties=dict(row.properties or {}),
                                         timestamp=row.timestamp).as_scope()
                if spec.where is None or evaluate_event_filter(spec.where, scope,
                                                               self.now).result:
                    found[index].setdefault(row.contact_id, []).append(scope)
        for spec, matching in zip(specs, found, strict=True):
            self._events[id(spec)] = (spec, matching)

    def _counted_by(self, spec: HasDone) -> Any:
        """Whether an event row (already in the batch, at or before now) counts for `spec`."""
        since = has_done_window(spec, self.now, None)
        if since is None:
            return Event.name == spec.event
        return and_(Event.name == spec.event, Event.timestamp >= since)

    def _events_of(self, specs: list[HasDone]) -> Any:
        """The batch's events at or before now that any of `specs` may count: per event name,
        from the earliest window start of the rules reading it (all history when one has none)."""
        earliest: dict[str, datetime | None] = {}
        for spec in specs:
            since = has_done_window(spec, self.now, None)
            if spec.event in earliest:
                known = earliest[spec.event]
                since = None if since is None or known is None else min(since, known)
            earliest[spec.event] = since
        by_name = [Event.name == name if since is None
                   else and_(Event.name == name, Event.timestamp >= since)
                   for name, since in sorted(earliest.items())]
        return and_(Event.contact_id.in_(self.ids), Event.name.in_(sorted(earliest)),
                    Event.timestamp <= self.now, or_(*by_name))


def _reads_rows(spec: HasDone) -> bool:
    """A rule with `where` or `sum` needs the events' properties, not only their number."""
    return spec.where is not None or spec.sum is not None


def _audience_event(message_id: str, contact_id: str, name: str, properties: dict[str, Any],
                    now: datetime) -> dict[str, Any]:
    """An event the sweep stores for a change, as `ProfileRules` stores its own."""
    return {"message_id": message_id, "type": PROFILE_RULES_EVENT_TYPE, "contact_id": contact_id,
            "name": name, "properties": properties, "timestamp": now, "received_at": utc_now()}


async def _store_new_events(s: AsyncSession, events: list[dict[str, Any]]) -> int:
    """Insert the events whose message ids are not stored yet, in one statement; returns how many.

    When a concurrent writer stores one of them first, the savepoint is rolled back and they
    are stored one by one (`record_event` finds the winner's row).
    """
    if not events:
        return 0
    ids = [e["message_id"] for e in events]
    existing: set[str] = set()
    for start in range(0, len(ids), 1000):  # far below the databases' parameter limits
        existing.update(await s.scalars(select(Event.message_id).where(
            Event.message_id.in_(ids[start:start + 1000]))))
    new = [e for e in events if e["message_id"] not in existing]
    if not new:
        return 0
    try:
        async with s.begin_nested():
            await s.execute(insert(Event), new)
        return len(new)
    except IntegrityError:
        stored = 0
        for event in new:
            _, created = await events_repo.record_event(s, **event)
            stored += int(created)
        return stored


def _reachable(contact: ContactSnapshot, spec: ReachableSpec) -> Verdict:
    return reachability(contact, spec.channel, spec.category)


__all__ = [
    "SweepActivities",
    "SweepRoutingError",
]
