"""Events nothing hears (no journey, no scoring rule, no segment counts them) cost only what the
time-based segments need: one decision per contact and routing pass, read ahead for all contacts
together, and with `quiet_decisions_every` one per contact and window. A decision that changes a
membership still records it (segment events and all)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import ProfileRules
from cairn.events.router import Router
from cairn.journey_run import EventMessage
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from cairn.store.schema import Event
from cairn.store.segments import enter_segment
from tests.engine_support import unique

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = Path(__file__).resolve().parents[2] / "journeys"
QUIET = "widget_hovered"
"""An event name no journey, scoring rule or segment of the catalog reads."""


def _at(moment: datetime) -> datetime:
    return moment


def counting(rules: ProfileRules) -> list[str]:
    """Record the events `apply` (the one-event-at-a-time path) is called for."""
    applied: list[str] = []
    apply = rules.apply

    async def counted(event: EventMessage, prepared: Any = None) -> list[int]:
        applied.append(event.event)
        return await apply(event, prepared)

    rules.apply = counted  # type: ignore[method-assign]
    return applied


async def segments_of(store: Store, contact: str) -> list[str]:
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact)
    assert snapshot is not None
    return snapshot.segments


async def events_named(store: Store, contact: str, name: str) -> list[Event]:
    async with store.session() as session:
        return list(await session.scalars(
            select(Event).where(Event.contact_id == contact, Event.name == name)))


async def known_contacts(store: Store, rules: ProfileRules, count: int) -> list[str]:
    contacts = [unique("c") for _ in range(count)]
    ingest = Ingest(store, Router(None, store), profile_rules=rules,  # type: ignore[arg-type]
                    clock=partial(_at, T0))
    for contact in contacts:
        await ingest.identify(IdentifyCall(user_id=contact, traits={"plan": "free"},
                                           timestamp=T0))
    return contacts


async def test_quiet_events_are_routed_without_deciding_each_one_on_its_own(
    store: Store,
) -> None:
    rules = ProfileRules.from_folder(store, CATALOG)
    contacts = await known_contacts(store, rules, 3)
    applied = counting(rules)
    later = T0 + timedelta(hours=2)
    ingest = Ingest(store, Router(None, store), profile_rules=rules,  # type: ignore[arg-type]
                    clock=partial(_at, later))
    results = await ingest.batch([TrackCall(user_id=contact, event=QUIET, timestamp=later)
                                  for contact in contacts for _ in range(2)])
    assert all(result.routed and result.routes == [] for result in results)
    assert applied == [], "a quiet event went the one-at-a-time way"
    for contact in contacts:
        assert await events_named(store, contact, "segment_exited") == []


async def test_a_quiet_event_still_takes_an_inactive_contact_out_of_inactive_segments(
    store: Store,
) -> None:
    rules = ProfileRules.from_folder(store, CATALOG)
    away, active = await known_contacts(store, rules, 2)
    back = T0 + timedelta(days=40)
    ingest = Ingest(store, Router(None, store), profile_rules=rules,  # type: ignore[arg-type]
                    clock=partial(_at, back))
    # The segment sweep moved `away` into the inactive segments while it was gone.
    await Ingest(store, None, profile_rules=rules, clock=partial(_at, back)).track(
        TrackCall(user_id=active, event=QUIET, timestamp=back - timedelta(days=1)))
    async with store.session() as session, session.begin():
        for segment in ("inactive_30d", "cold_users"):
            await enter_segment(session, away, segment, back - timedelta(days=5))
    await ingest.batch([TrackCall(user_id=contact, event=QUIET, timestamp=back)
                        for contact in (away, active)])
    assert "inactive_30d" not in await segments_of(store, away)
    exited = {e.properties["segment"] for e in await events_named(store, away, "segment_exited")}
    assert {"inactive_30d", "cold_users"} <= exited


async def test_within_the_window_a_contacts_quiet_events_share_one_decision(
    store: Store,
) -> None:
    rules = ProfileRules.from_folder(store, CATALOG)
    first, other = await known_contacts(store, rules, 2)
    now = T0 + timedelta(hours=1)

    def ingest_at(moment: datetime) -> Ingest:
        return Ingest(store, router, profile_rules=rules, clock=partial(_at, moment),
                      quiet_decisions_every=timedelta(minutes=1))

    router = Router(None, store)  # type: ignore[arg-type]
    shared = ingest_at(now)
    await shared.batch([TrackCall(user_id=c, event=QUIET, timestamp=now) for c in (first, other)])
    # A stale membership (as a crash between deciding and recording could leave): the next
    # decision corrects it, but within the window there is none.
    async with store.session() as session, session.begin():
        await enter_segment(session, first, "inactive_30d", now)
    shared.clock = partial(_at, now + timedelta(seconds=30))
    within = await shared.batch([TrackCall(user_id=c, event=QUIET,
                                           timestamp=now + timedelta(seconds=30))
                                 for c in (first, other)])
    assert all(result.routed and result.routes == [] for result in within)
    async with store.session() as session:
        rows = await session.scalars(select(Event).where(
            Event.id.in_([result.event_id for result in within])))
        assert all(row.routed_at is not None and row.routing_claimed_by is None for row in rows)
    assert "inactive_30d" in await segments_of(store, first)
    shared.clock = partial(_at, now + timedelta(minutes=2))
    await shared.batch([TrackCall(user_id=c, event=QUIET, timestamp=now + timedelta(minutes=2))
                        for c in (first, other)])
    assert "inactive_30d" not in await segments_of(store, first)
