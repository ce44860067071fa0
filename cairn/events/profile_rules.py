"""Profile rules: what a stored event changes about its contact's scores and segments.

Ingest calls `ProfileRules.apply` for every stored event before routing it. In one transaction it
applies the scoring rules the event matches (each change keyed `score/<message id>/<rule id>`, so
an event handled twice scores once), re-decides the contact's segments, records entries and exits
with their times, and stores one new event per change for the same contact: `segment_entered` /
`segment_exited` (`{segment}`) and `score_crossed` (`{dimension, threshold, direction, total}`).
Their message ids derive from the source message id, so handling the source again stores nothing
new. Ingest routes the new events like any other, so journeys trigger on them and they can score
in turn (a decay on entering `inactive_30d` is a rule on `segment_entered`).

Only the rules an event can affect are applied (`RuleIndex`, built once from the definitions):
the scoring rules on its name; the segments whose rule counts it (`has_done`) and the segments
time changes (`within`, `older_than`: every event moves the contact's clock, so a login lets a
contact out of `frequent_buyers` when its purchases have aged), with the segments that read those
(`in_segment`). Every segment is decided for events that change the profile (identify, attribute
changes, score and segment changes, locations), when a scoring rule changed a score, and for the
contact's earliest event (a rule such as `not has_done purchase` holds before anything happened).
The `has_done` questions of one decision are answered from two queries (`BatchHistory`).
Re-deciding everyone as time passes is the segment sweep's job, not this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.catalog_folder import load_profile_rules
from cairn.conditions import (
    AllCondition,
    AnyCondition,
    HasDoneCondition,
    NotCondition,
    ReachableSpec,
    Verdict,
)
from cairn.contact import ContactSnapshot
from cairn.journey_run import EventMessage
from cairn.log import get_logger
from cairn.reachability import reachability
from cairn.scoring import (
    SCORE_CROSSED,
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    Scoring,
    crossings,
)
from cairn.segments import Memo, Segment, decide, has_done_specs, members, time_based
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store import sweeps as sweeps_repo
from cairn.store.db import Store
from cairn.store.schema import Contact, ScoreChangeRecord
from cairn.store.sweeps import BatchHistory

log = get_logger(__name__)

PROFILE_RULES_EVENT_TYPE = "audience"
"""The `type` of events Cairn stores itself (segment and score changes), beside track/identify.
The stored value keeps its first name so existing rows stay readable; in code, "audience" means
only the ad-platform audiences of `audience` steps."""


PROFILE_EVENTS = frozenset({
    "identify", "attribute_changed", SCORE_CROSSED, SEGMENT_ENTERED, SEGMENT_EXITED,
    "location_updated", "geofence_entered", "geofence_exited",
})
"""Events that say the profile changed (traits, scores, memberships, position): any segment may
read what they changed, so all are decided."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _parts(condition: Any) -> list[Any]:
    """A condition and every condition inside it (not the event filters of `has_done`)."""
    if isinstance(condition, AllCondition | AnyCondition):
        inner = condition.all if isinstance(condition, AllCondition) else condition.any
        return [condition, *(part for child in inner for part in _parts(child))]
    if isinstance(condition, NotCondition):
        return [condition, *_parts(condition.not_)]
    return [condition]


def _events_counted(segment: Segment) -> set[str]:
    """The event names a segment rule counts or sums (`has_done`)."""
    return {part.has_done.event for part in _parts(segment.rule)
            if isinstance(part, HasDoneCondition)}


@dataclass(frozen=True)
class RuleIndex:
    """Which scoring rules and segments each event name can affect; built once per definitions."""

    scored: frozenset[str]
    """Event names some scoring rule is on."""
    segments_by_event: dict[str, list[Segment]]
    """Per event name, the segments to decide (in evaluation order), readers included."""
    every_event: list[Segment]
    """Segments any event can change: those time changes (`within`, `older_than`: an event
    moves the contact's clock), readers included."""

    @classmethod
    def of(cls, segments: list[Segment], scoring: Scoring) -> RuleIndex:
        readers: dict[str, set[str]] = {}
        for segment in segments:
            for used in segment.segments_used():
                readers.setdefault(used, set()).add(segment.key)

        def with_readers(keys: set[str]) -> list[Segment]:
            todo = list(keys)
            while todo:  # a segment reading a decided one is decided after it
                for reader in readers.get(todo.pop(), set()) - keys:
                    keys.add(reader)
                    todo.append(reader)
            return [segment for segment in segments if segment.key in keys]

        every = time_based(segments)
        by_event: dict[str, set[str]] = {}
        for segment in segments:
            for name in _events_counted(segment):
                by_event.setdefault(name, set(every)).add(segment.key)
        return cls(
            scored=frozenset(ref.rule.event for ref in scoring.rules()),
            segments_by_event={name: with_readers(keys) for name, keys in by_event.items()},
            every_event=with_readers(every),
        )

    def segments_for(self, event: str) -> list[Segment]:
        return self.segments_by_event.get(event, self.every_event)


@dataclass(frozen=True)
class Prepared:
    """What deciding one event's segments reads, read ahead for many events at once."""

    contact: ContactSnapshot
    now: datetime
    history: BatchHistory
    memo: Memo
    """Comparison verdicts shared by the contacts read ahead with the same `now`."""


class ProfileRules:
    """Segments and scoring rules, applied to one contact per stored event."""

    def __init__(
        self,
        store: Store,
        segments: list[Segment],
        scoring: Scoring,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.segments = segments
        self.scoring = scoring
        self.clock = clock
        self.index = RuleIndex.of(segments, scoring)

    @classmethod
    def from_folder(cls, store: Store, folder: Path, **options: Any) -> ProfileRules:
        """Definitions from `segments/` and `scoring/` in a journeys folder (either may be absent).

        Raises `SegmentFileError` / `ScoringFileError` naming every file and field to fix.
        """
        segments, scoring = load_profile_rules(Path(folder))
        return cls(store, segments, scoring, **options)

    def reads_only_the_clock(self, event_name: str) -> bool:
        """Whether an event of this name changes nothing here but the contact's clock: no scoring
        rule is on it, no segment counts it, it is no profile change. Such an event can only move
        the time-based segments (`RuleIndex.every_event`), which `unchanged` checks."""
        return (event_name not in self.index.scored and event_name not in PROFILE_EVENTS
                and event_name not in self.index.segments_by_event)

    async def unchanged(self, prepared: Prepared, event_name: str) -> bool:
        """Whether deciding `event_name`'s segments, as read ahead in `prepared`, changes no
        membership (then `apply` would store and record nothing)."""
        segments = self._segments_to_decide_name(event_name)
        contact = prepared.contact
        found = await members(segments, contact, prepared.history.scope(contact, prepared.now),
                              prepared.memo)
        before = set(contact.segments)
        return all(member == (key in before) for key, member in found.items())

    async def prepare(self, events: list[EventMessage]) -> dict[str, Prepared]:
        """Read ahead, for many contacts at once, what deciding their segments reads.

        For the first of each contact's events among `events` whose segments are decided
        without scoring (the usual case: an event only time-based segments care about): the
        contacts in three queries, and their `has_done` answers in two per distinct `now`
        (events accepted together share one), instead of five queries per event. Pass each
        event's entry to `apply`. Keyed by message id.
        """
        if not self.segments:
            return {}
        firsts: dict[str, EventMessage] = {}
        for event in events:
            firsts.setdefault(event.contact_id, event)
        wanted = [event for event in firsts.values()
                  if event.event not in self.index.scored and self._segments_to_decide(event)]
        if len(wanted) < 2:
            return {}
        specs = has_done_specs(self.segments)
        prepared: dict[str, Prepared] = {}
        async with self.store.session() as s:
            contacts = await sweeps_repo.snapshots(
                s, await sweeps_repo.contact_rows(s, sorted({e.contact_id for e in wanted})))
            by_now: dict[datetime, list[tuple[EventMessage, ContactSnapshot]]] = {}
            for event in wanted:
                contact = contacts.get(event.contact_id)
                if contact is None:
                    continue
                latest = contact.last_seen_at
                now = max(event.timestamp, latest) if latest is not None else event.timestamp
                by_now.setdefault(now, []).append((event, contact))
            for now, group in by_now.items():
                history = BatchHistory(s, [contact.id for _, contact in group], now, specs)
                memo: Memo = {}
                if specs:  # answer every planned question now, while the session is open
                    await history.count(group[0][1].id, specs[0])
                for event, contact in group:
                    prepared[event.message_id] = Prepared(contact, now, history, memo)
        return prepared

    async def apply(self, event: EventMessage, prepared: Prepared | None = None) -> list[int]:
        """Score and segment the event's contact; returns the ids of the events it stored.

        Safe to call again for the same event: nothing is scored, entered or stored twice.
        `prepared` is this event's entry from `prepare`, if it has one.
        """
        scored = event.event in self.index.scored
        segments = self._segments_to_decide(event)
        if not scored and not segments:
            if not self.segments or not await self._earliest_event(event):
                return []
            segments = self.segments
        bound = log.bind(contact=event.contact_id, message_id=event.message_id,
                         event_name=event.event)
        emitted: list[tuple[str, str, dict[str, Any]]] = []
        async with self.store.session() as s, s.begin():
            if scored:
                emitted += await self._score(s, event, bound)
            if scored and await self._rescored(s, event):
                segments = self.segments
            emitted += await self._segment(s, event, bound, segments,
                                           None if scored else prepared)
            stored: list[int] = []
            for message_id, name, properties in emitted:
                row, new = await events_repo.record_event(
                    s, message_id=message_id, type=PROFILE_RULES_EVENT_TYPE,
                    contact_id=event.contact_id, name=name, properties=properties,
                    timestamp=event.timestamp, received_at=self.clock(),
                )
                if new:
                    stored.append(row.id)
                    bound.info("profile_rules.emitted", emitted=name, emitted_id=message_id,
                               **properties)
        return stored

    def _segments_to_decide(self, event: EventMessage) -> list[Segment]:
        return self._segments_to_decide_name(event.event)

    def _segments_to_decide_name(self, event_name: str) -> list[Segment]:
        if event_name in PROFILE_EVENTS:
            return self.segments
        return self.index.segments_for(event_name)

    async def _earliest_event(self, event: EventMessage) -> bool:
        """Whether this is (one of) the contact's earliest events: all segments are decided."""
        async with self.store.session() as session:
            first = await session.scalar(
                select(Contact.first_seen_at).where(Contact.id == event.contact_id))
        return first is None or event.timestamp <= first

    async def _rescored(self, s: AsyncSession, event: EventMessage) -> bool:
        """Whether this event changed a score (now, or in an earlier pass that a crash cut
        short): then every segment is decided, as any may read scores."""
        key = f"score/{event.message_id}/%"
        found = await s.scalar(select(ScoreChangeRecord.id)
                               .where(ScoreChangeRecord.idempotency_key.like(key)).limit(1))
        return found is not None

    # ------------------------------------------------------------------ scoring

    async def _score(self, s: AsyncSession, event: EventMessage,
                     bound: Any) -> list[tuple[str, str, dict[str, Any]]]:
        emitted = []
        for ref in self.scoring.matching(event, event.timestamp):
            rule = ref.rule
            key = f"score/{event.message_id}/{ref.id}"
            if await s.scalar(select(ScoreChangeRecord.id)
                              .where(ScoreChangeRecord.idempotency_key == key)) is not None:
                continue  # this event already scored by this rule
            total = await scores_repo.change_score(
                s, contact_id=event.contact_id, dimension=rule.dimension, delta=rule.add,
                reason=rule.says(), source=f"event:{event.event}:{event.message_id}",
                workflow_id=None, idempotency_key=key, now=event.timestamp,
            )
            bound.info("profile_rules.scored", rule=ref.id, dimension=rule.dimension,
                       delta=rule.add, total=total)
            for crossing in crossings(rule.dimension, total - rule.add, total,
                                      self.scoring.thresholds(rule.dimension)):
                emitted.append((
                    f"{event.message_id}/{SCORE_CROSSED}/{ref.id}/{crossing.threshold}",
                    SCORE_CROSSED,
                    {"dimension": crossing.dimension, "threshold": crossing.threshold,
                     "direction": crossing.direction, "total": crossing.total},
                ))
        return emitted

    # ------------------------------------------------------------------ segments

    async def _segment(self, s: AsyncSession, event: EventMessage, bound: Any,
                       segments: Iterable[Segment],
                       prepared: Prepared | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        segments = list(segments)
        if not segments:
            return []
        contact = (prepared.contact if prepared is not None
                   else await contacts_repo.snapshot(s, event.contact_id))
        if contact is None:
            return []
        if contact.first_seen_at is None or event.timestamp <= contact.first_seen_at:
            segments = self.segments  # the contact's earliest event: decide everything once
        # Membership is the contact's state as of their latest activity, not as of this event:
        # events are routed in the background and may be decided after later ones (a derived
        # score_crossed after a page view); deciding "as of" the older event would undo what
        # the newer one established.
        latest = contact.last_seen_at
        now = max(event.timestamp, latest) if latest is not None else event.timestamp
        # Every has_done the segments ask about is answered from two queries, not one each.
        history = (prepared.history if prepared is not None
                   else BatchHistory(s, [event.contact_id], now, has_done_specs(segments)))
        scope = history.scope(contact, now)
        before = set(contact.segments)
        # Most events change no membership: find out without building reasons (comparisons
        # memoized across the contacts read ahead together), then decide with reasons only
        # when something changes.
        memo = prepared.memo if prepared is not None else None
        found = await members(segments, contact, scope, memo)
        if all(member == (key in before) for key, member in found.items()):
            return []
        scope = history.scope(contact, now)
        emitted = []
        for decided in await decide(segments, contact, scope):
            if decided.member and decided.segment not in before:
                await segments_repo.enter_segment(s, event.contact_id, decided.segment, now)
                name = SEGMENT_ENTERED
            elif not decided.member and decided.segment in before:
                await segments_repo.exit_segment(s, event.contact_id, decided.segment, now)
                name = SEGMENT_EXITED
            else:
                continue
            bound.info("profile_rules.segment", change=name, segment=decided.segment,
                       reason=decided.reason)
            emitted.append((f"{event.message_id}/{name}/{decided.segment}", name,
                            {"segment": decided.segment}))
        return emitted


def _reachable(contact: ContactSnapshot, spec: ReachableSpec) -> Verdict:
    return reachability(contact, spec.channel, spec.category)


__all__ = ["PROFILE_RULES_EVENT_TYPE", "ProfileRules"]
