"""Profile rules: what a stored event changes about its contact's scores and segments.

Ingest calls `ProfileRules.apply` for every stored event before routing it. In one transaction it
applies the scoring rules the event matches (each change keyed `score/<message id>/<rule id>`, so
an event handled twice scores once), re-decides the contact's segments, records entries and exits
with their times, and stores one new event per change for the same contact: `segment_entered` /
`segment_exited` (`{segment}`) and `score_crossed` (`{dimension, threshold, direction, total}`).
Their message ids derive from the source message id, so handling the source again stores nothing
new. Ingest routes the new events like any other, so journeys trigger on them and they can score
in turn (a decay on entering `inactive_30d` is a rule on `segment_entered`).

Only the contact concerned is decided here; the sweep that re-decides time-based segments for
everyone (inactive for 30 days) is not part of this module.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.catalog_folder import load_profile_rules
from cairn.conditions import (
    ConditionScope,
    HasDone,
    ReachableSpec,
    Verdict,
)
from cairn.conditions import window_start as has_done_window
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
from cairn.segments import Segment, decide
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.store.schema import ScoreChangeRecord

log = get_logger(__name__)

PROFILE_RULES_EVENT_TYPE = "audience"
"""The `type` of events Cairn stores itself (segment and score changes), beside track/identify.
The stored value keeps its first name so existing rows stay readable; in code, "audience" means
only the ad-platform audiences of `audience` steps."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


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

    @classmethod
    def from_folder(cls, store: Store, folder: Path, **options: Any) -> ProfileRules:
        """Definitions from `segments/` and `scoring/` in a journeys folder (either may be absent).

        Raises `SegmentFileError` / `ScoringFileError` naming every file and field to fix.
        """
        segments, scoring = load_profile_rules(Path(folder))
        return cls(store, segments, scoring, **options)

    async def apply(self, event: EventMessage) -> list[int]:
        """Score and segment the event's contact; returns the ids of the events it stored.

        Safe to call again for the same event: nothing is scored, entered or stored twice.
        """
        bound = log.bind(contact=event.contact_id, message_id=event.message_id,
                         event_name=event.event)
        emitted: list[tuple[str, str, dict[str, Any]]] = []
        async with self.store.session() as s, s.begin():
            emitted += await self._score(s, event, bound)
            emitted += await self._segment(s, event, bound)
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

    async def _segment(self, s: AsyncSession, event: EventMessage,
                       bound: Any) -> list[tuple[str, str, dict[str, Any]]]:
        if not self.segments:
            return []
        contact = await contacts_repo.snapshot(s, event.contact_id)
        if contact is None:
            return []
        # Membership is the contact's state as of their latest activity, not as of this event:
        # events are routed in the background and may be decided after later ones (a derived
        # score_crossed after a page view); deciding "as of" the older event would undo what
        # the newer one established.
        latest = contact.last_seen_at
        now = max(event.timestamp, latest) if latest is not None else event.timestamp
        scope = ConditionScope(
            now=now,
            count_events=lambda spec: self._count(s, event.contact_id, spec, now),
            sum_events=lambda spec: self._sum(s, event.contact_id, spec, now),
            reachable=lambda spec: _reachable(contact, spec),
        )
        emitted = []
        before = set(contact.segments)
        for decided in await decide(self.segments, contact, scope):
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

    @staticmethod
    async def _count(s: AsyncSession, contact_id: str, spec: HasDone, now: datetime) -> int:
        return await events_repo.count_events(
            s, contact_id, spec.event, since=has_done_window(spec, now, None), until=now,
            where=spec.where,
        )

    @staticmethod
    async def _sum(s: AsyncSession, contact_id: str, spec: HasDone, now: datetime) -> float:
        """The `sum` property added up over the events `has_done` counts (non-numbers skipped)."""
        assert spec.sum is not None  # evaluate only asks for sums of has_done with `sum`
        return await events_repo.sum_event_property(
            s, contact_id, spec.event, spec.sum, since=has_done_window(spec, now, None),
            until=now, where=spec.where,
        )


def _reachable(contact: ContactSnapshot, spec: ReachableSpec) -> Verdict:
    return reachability(contact, spec.channel, spec.category)


__all__ = ["PROFILE_RULES_EVENT_TYPE", "ProfileRules"]
