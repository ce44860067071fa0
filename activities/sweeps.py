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

The set-based queries that read and judge a whole batch at once are `cairn.store.sweeps`; the
definitions come from the catalog folder (`cairn.catalog_folder.current_profile_rules`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.broadcast import BroadcastEntry
from activities.send import DeliveryActivities
from cairn.catalog_folder import current_profile_rules
from cairn.date_triggers import (
    SWEEP_EVENT_TYPE,
    date_trigger_event,
    due_date,
    schedule_trigger_event,
)
from cairn.events.ingest import ROUTING_LEASE, Ingest
from cairn.events.profile_rules import PROFILE_RULES_EVENT_TYPE, ProfileRules
from cairn.events.router import Router
from cairn.journey import TRIGGER_EVENTS, Journey
from cairn.log import get_logger
from cairn.scoring import (
    SCORE_CROSSED,
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    InactivityDecay,
    crossings,
)
from cairn.segments import Segment, decide, has_done_specs, time_based
from cairn.store import events as events_repo
from cairn.store import journeys as journeys_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store import sweeps as sweeps_repo
from cairn.store.db import Store
from cairn.store.schema import Event
from cairn.sweeps import (
    ENTER_IMPORTED,
    ENTER_SCHEDULED,
    PLAN_IMPORTED,
    PLAN_SCHEDULED,
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
    """Sweep batches over the store; `router` overrides the one built from the activity's client;
    `delivery` (channels, delivery policy) sends for schedule journeys with no later step."""

    def __init__(self, store: Store, *, router: Router | None = None,
                 delivery: DeliveryActivities | None = None) -> None:
        self.store = store
        self.router = router
        self.delivery = delivery

    # ------------------------------------------------------------------ segments

    @activity.defn(name=SWEEP_SEGMENTS)
    async def sweep_segments(self, batch: SweepBatch) -> SweepBatchResult:
        """Re-decide time-based segments and apply inactivity decays for one batch at `batch.now`.

        Only time-based segments (and those reading them) are decided: event-driven ones are kept
        current by ingest. A read-only pass finds the contacts that change (set-based: a few
        queries for the whole batch); only those get a write, one transaction for all of them,
        decided again under their locks (`_write_changes`). Each contact is judged at
        `batch.now`, or at their latest activity when that is later (`sweeps_repo.by_moment`).
        """
        rules = self._profile_rules(batch.config)
        timed_keys = time_based(rules.segments)
        timed = [s for s in rules.segments if s.key in timed_keys]
        decays = rules.scoring.inactivity_decays()
        async with self.store.session() as s:
            rows = await sweeps_repo.contact_rows_after(s, batch.after, batch.config.batch_size)
            ids = [row.id for row in rows]
            changing: list[str] = []
            if ids and (timed or decays):
                changing = await sweeps_repo.changing_contacts(s, timed, decays, rows, batch.now)
        emitted = 0
        if changing:
            emitted = await self._write_changes(batch, rules, timed, decays, changing)
        # Also what an earlier attempt of this batch stored but did not route.
        pending: list[int] = []
        if ids:
            async with self.store.session() as s:
                pending = await sweeps_repo.unrouted_sweep_events(s, batch.sweep_id, ids)
        routed = await self._route(batch.config, rules, pending)
        log.info("sweep.segments.batch", sweep=batch.sweep_id, after=batch.after,
                 contacts=len(ids), changing=len(changing), emitted=emitted, routed=routed)
        return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                emitted=emitted, routed=routed)

    async def _write_changes(self, batch: SweepBatch, rules: ProfileRules, timed: list[Segment],
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
                rows = await sweeps_repo.contact_rows(s, contact_ids)
                due = await sweeps_repo.due_decays(s, decays, rows, now)
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
                                              rules.scoring.thresholds(change.dimension)):
                        events.append(_change_event(
                            f"{prefix}/{d.contact_id}/{SCORE_CROSSED}/{d.decay.id}/"
                            f"{crossing.threshold}", d.contact_id, SCORE_CROSSED,
                            {"dimension": crossing.dimension, "threshold": crossing.threshold,
                             "direction": crossing.direction, "total": crossing.total}, now))
            await segments_repo.lock_contacts(s, contact_ids)
            fresh = await sweeps_repo.snapshots(
                s, await sweeps_repo.contact_rows(s, contact_ids))
            entered: list[tuple[str, str, datetime]] = []
            exited: list[tuple[str, str, datetime]] = []
            for moment, group in sweeps_repo.by_moment(fresh, now).items():
                everything = any(contact.id in decayed for contact in group)
                history = sweeps_repo.BatchHistory(
                    s, [c.id for c in group], moment,
                    has_done_specs(rules.segments if everything else timed))
                for contact in group:
                    segments = rules.segments if contact.id in decayed else timed
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
                        events.append(_change_event(
                            f"{prefix}/{contact.id}/{name}/{decided.segment}", contact.id,
                            name, {"segment": decided.segment}, now))
            await segments_repo.record_changes(s, entered, exited)
            return await events_repo.record_events(s, events)

    def _profile_rules(self, config: SweepConfig) -> ProfileRules:
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
            contacts = await sweeps_repo.contacts_after(s, batch.after, batch.config.batch_size)
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

    @activity.defn(name=PLAN_SCHEDULED)
    async def plan_scheduled(self, batch: SweepBatch) -> list[str]:
        """The bounds of a schedule occurrence's batches (`sweeps_repo.scheduled_bounds`)."""
        async with self.store.session() as s:
            return await sweeps_repo.scheduled_bounds(s, batch.segment, batch.config.batch_size)

    @activity.defn(name=ENTER_SCHEDULED)
    async def enter_scheduled(self, batch: SweepBatch) -> SweepBatchResult:
        """Emit `schedule_fired` for one batch of the contacts a journey's schedule occurrence
        enters: the open members of `batch.segment`, or every contact (after `batch.after`: up
        to `batch.upto`, or `batch_size` of them).

        Message ids are `schedule/<journey>/<occurrence>/<contact>`, so an occurrence run twice
        enters no one twice. When the journey is the only one the events concern, the batch
        enters together (`activities.broadcast`): entry rules with one read, entries in one
        write, runs started side by side, and for a journey with no later step than a send,
        the sends made here, without a run per contact.
        """
        assert batch.journey is not None, "a schedule batch names its journey"
        async with self.store.session() as s:
            ids = await sweeps_repo.scheduled_contact_ids(
                s, batch.segment, batch.after,
                None if batch.upto is not None else batch.config.batch_size, batch.upto)
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for cid in ids:
            message_id, properties = schedule_trigger_event(batch.journey, batch.now, cid)
            rows.append((message_id, cid, properties))
        name = TRIGGER_EVENTS["schedule"]
        router = self._router(batch.config)
        rules = self._profile_rules(batch.config)
        if router is not None and rows and rules.reads_only_the_clock(name):
            journey = await self._entering_alone(router, batch.journey, name, rows[0][2])
            if journey is not None:
                emitted = await self._store_events(batch, name, rows)
                async with self.store.session() as s:
                    stored = await events_repo.events_by_message_ids(
                        s, [message_id for message_id, _, _ in rows])
                routed = await self._enter_together(batch, journey, router, stored)
                return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                        emitted=emitted, routed=routed)
        return await self._emit(batch, name, rows, ids)

    # ------------------------------------------------------------------ imports

    @activity.defn(name=PLAN_IMPORTED)
    async def plan_imported(self, batch: SweepBatch) -> list[str]:
        """The bounds of an import's entries (`sweeps_repo.imported_bounds`)."""
        assert batch.import_id is not None and batch.journey is not None
        async with self.store.session() as s:
            return await sweeps_repo.imported_bounds(s, batch.import_id, batch.journey,
                                                     batch.config.batch_size)

    @activity.defn(name=ENTER_IMPORTED)
    async def enter_imported(self, batch: SweepBatch) -> SweepBatchResult:
        """Enter one batch of an import's `journey_imported` events into its journey: together
        when the journey is the only one they concern, else routed one by one."""
        assert batch.import_id is not None and batch.journey is not None
        async with self.store.session() as s:
            stored = await sweeps_repo.imported_events(
                s, batch.import_id, batch.journey, batch.after,
                None if batch.upto is not None else batch.config.batch_size, batch.upto)
        name = TRIGGER_EVENTS["imported"]
        router = self._router(batch.config)
        rules = self._profile_rules(batch.config)
        result = SweepBatchResult(contacts=len(stored))
        if router is not None and stored and rules.reads_only_the_clock(name):
            journey = await self._entering_alone(router, batch.journey, name,
                                                 dict(stored[0].properties or {}))
            if journey is not None:
                result.routed = await self._enter_together(batch, journey, router, stored)
                return result
        result.routed = await self._route(batch.config, rules,
                                          [row.id for row in stored if row.routed_at is None])
        return result

    async def _entering_alone(self, router: Router, key: str, name: str,
                              properties: dict[str, Any]) -> Journey | None:
        """The journey, when its trigger is the only thing the batch's events concern."""
        catalog = await router.catalog()
        if catalog.listening_to.get(name):
            return None
        admitting = [j for j in catalog.triggered_by.get(name, ())
                     if j.trigger.admits(j.key, properties)[0]]
        return admitting[0] if [j.key for j in admitting] == [key] else None

    async def _enter_together(self, batch: SweepBatch, journey: Journey, router: Router,
                              stored: list[Event]) -> int:
        """Claim the batch's stored events, enter them together, mark them routed (with the
        entries); returns how many this attempt routed."""
        claimant = uuid.uuid4().hex
        async with self.store.session() as s, s.begin():
            claimed = await events_repo.claim_events(
                s, [row.id for row in stored if row.routed_at is None], claimant, utc_now(),
                ROUTING_LEASE)
        # The events this batch enters: those it claimed, and those an earlier attempt marked
        # routed (their entries say how far it got). One the relay routes right now is its.
        mine = {row.id for row in claimed}
        entering = [row for row in stored if row.id in mine or row.routed_at is not None]
        acting = (activity.info().workflow_id if activity.in_activity()
                  else f"broadcast/{journey.key}/{batch.now.isoformat()}")

        before = {row.message_id for row in entering if row.routed_at is not None}

        async def routed(session: AsyncSession) -> set[str]:
            marked = await events_repo.mark_routed_if_claimed(session, sorted(mine), claimant,
                                                              utc_now())
            return before | marked

        renewing = asyncio.create_task(_renew_claims(self.store, claimant))
        try:
            entered = await BroadcastEntry(self.store, router, self.delivery).enter(
                journey, [events_repo.event_message(row) for row in entering], acting=acting,
                with_entries=routed)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        actions = Counter(d.action for d in entered.decisions)
        log.info("sweep.batch.entered", sweep=batch.sweep_id, journey=journey.key,
                 acting=acting, after=batch.after, events=len(entering),
                 started=actions["started"], signalled=actions["signalled"],
                 refused=actions["refused"], sends=entered.sends)
        return len(claimed)

    async def _store_events(self, batch: SweepBatch, name: str,
                            rows: list[tuple[str, str, dict[str, Any]]]) -> int:
        now = utc_now()
        async with self.store.session() as s, s.begin():
            return await events_repo.record_events(s, [
                {"message_id": message_id, "type": SWEEP_EVENT_TYPE, "contact_id": contact_id,
                 "name": name, "properties": properties, "timestamp": batch.now,
                 "received_at": now}
                for message_id, contact_id, properties in rows])

    # ------------------------------------------------------------------ shared

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
        routed = await self._route(batch.config, self._profile_rules(batch.config), pending)
        log.info("sweep.batch", sweep=batch.sweep_id, event_name=name, journey=batch.journey,
                 after=batch.after, contacts=len(ids), emitted=emitted, routed=routed)
        return SweepBatchResult(contacts=len(ids), last=ids[-1] if ids else None,
                                emitted=emitted, routed=routed)

    def _router(self, config: SweepConfig) -> Router | None:
        """The router given, else one on the activity's client (None outside Temporal)."""
        if self.router is None and activity.in_activity():
            return Router(activity.client(), self.store, task_queue=config.journey_task_queue,
                          delivery_task_queue=config.delivery_task_queue)
        return self.router

    async def _route(self, config: SweepConfig, rules: ProfileRules,
                     event_ids: list[int]) -> int:
        """Route stored events like ingested ones; raise when some could not be routed."""
        router = self._router(config)
        if router is None or not event_ids:
            return 0  # outside Temporal: the relay routes them
        done = await Ingest(self.store, router, profile_rules=rules).route_events(event_ids)
        left = [i for i in event_ids if i not in done]
        if left:
            async with self.store.session() as s:
                still = await events_repo.unrouted_among(s, left)
            if still:
                raise SweepRoutingError(
                    f"{len(still)} event(s) of this batch could not be routed (first id "
                    f"{still[0]}); the batch is retried, and the relay routes them meanwhile"
                )
        return len(done)


async def _renew_claims(store: Store, claimant: str) -> None:
    """Keep a batch's claims on its events alive while it enters them (see `Ingest`)."""
    while True:
        await asyncio.sleep(ROUTING_LEASE.total_seconds() / 3)
        try:
            async with store.session() as session, session.begin():
                await events_repo.renew_claims(session, claimant, utc_now())
        except OperationalError as error:  # the store is busy: the next renewal may pass
            log.warning("sweep.claims_not_renewed", error=str(error))


def _change_event(message_id: str, contact_id: str, name: str, properties: dict[str, Any],
                  now: datetime) -> dict[str, Any]:
    """An event the sweep stores for a change, as `ProfileRules` stores its own."""
    return {"message_id": message_id, "type": PROFILE_RULES_EVENT_TYPE, "contact_id": contact_id,
            "name": name, "properties": properties, "timestamp": now, "received_at": utc_now()}


__all__ = [
    "SweepActivities",
    "SweepRoutingError",
]
