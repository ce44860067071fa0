"""Events: every accepted track/identify call, stored once per message id, then routed.

`routed_at` stays empty until the router has delivered the event to every matching journey, so
a relay can pick up what a crashed API process accepted but never routed (`unrouted_events`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.conditions import evaluate_event_filter, event_field
from cairn.journey_run import EventMessage
from cairn.store.db import insert_once
from cairn.store.schema import Event


async def event_by_message_id(s: AsyncSession, message_id: str) -> Event | None:
    return await s.scalar(select(Event).where(Event.message_id == message_id))


async def record_event(
    s: AsyncSession,
    *,
    message_id: str,
    type: str,
    contact_id: str,
    name: str,
    properties: dict[str, Any],
    timestamp: datetime,
    received_at: datetime,
) -> tuple[Event, bool]:
    """Store an event once; a repeated message id returns the stored row and False."""
    row = Event(
        message_id=message_id,
        type=type,
        contact_id=contact_id,
        name=name,
        properties=properties,
        timestamp=timestamp,
        received_at=received_at,
    )
    return await insert_once(s, row, lambda: event_by_message_id(s, message_id))


async def record_events(s: AsyncSession, events: list[dict[str, Any]]) -> int:
    """Store the events (each given as `record_event`'s arguments) whose message ids are not
    stored yet, in one statement; returns how many were stored.

    For writers that store many at once (a sweep batch). When a concurrent writer stores one of
    them first, the savepoint is rolled back and they are stored one by one (`record_event` finds
    the winner's row).
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
            _, created = await record_event(s, **event)
            stored += int(created)
        return stored


async def stored_message_ids(s: AsyncSession, message_ids: Iterable[str]) -> dict[str, int]:
    """Which of these message ids are stored already, with their events' ids."""
    ids = list(dict.fromkeys(message_ids))
    found: dict[str, int] = {}
    for start in range(0, len(ids), 1000):
        rows = await s.execute(select(Event.message_id, Event.id).where(
            Event.message_id.in_(ids[start:start + 1000])))
        found.update({str(m): int(i) for m, i in rows})
    return found


async def insert_events(s: AsyncSession, events: list[dict[str, Any]]) -> dict[str, int]:
    """Store the events whose message ids are not stored yet (each given as `record_event`'s
    arguments, message ids distinct) with one statement; returns the ids of the events stored
    now, by message id (ids ascending in the order given).

    One `INSERT ... ON CONFLICT (message_id) DO NOTHING RETURNING` (several for very large
    lists): a message id already stored, or stored meanwhile by a concurrent writer, is skipped
    without failing the caller's transaction, and is missing from the answer
    (`stored_message_ids` finds its event).
    """
    if not events:
        return {}
    dialect = postgresql if s.bind.dialect.name == "postgresql" else sqlite
    table = Event.__table__
    rows = await s.execute(
        dialect.insert(table).on_conflict_do_nothing(index_elements=["message_id"])
        .returning(table.c.message_id, table.c.id), events)
    return {str(message_id): int(event_id) for message_id, event_id in rows}


def _window(query: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        query = query.where(Event.timestamp >= since)
    if until is not None:
        query = query.where(Event.timestamp <= until)
    return query


async def count_events(
    s: AsyncSession,
    contact_id: str,
    name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: Any = None,
) -> int:
    """How many `name` events the contact did in [since, until] that match `where`.

    Both ends are inclusive, so an event at exactly the journey's `now` (often the trigger itself)
    counts. `where` is a condition on the event, decided in Python with the same evaluator the
    router and the workflows use (relative dates in it are measured from `until`); without one the
    database counts.
    """
    matching = (Event.contact_id == contact_id, Event.name == name)
    if where is None:
        total = await s.scalar(_window(select(func.count(Event.id)).where(*matching), since, until))
        return int(total or 0)
    rows = await s.scalars(_window(select(Event).where(*matching), since, until))
    return sum(
        1 for row in rows
        if evaluate_event_filter(where, event_message(row).as_scope(), until or row.timestamp)
        .result
    )


async def sum_event_property(
    s: AsyncSession,
    contact_id: str,
    name: str,
    field: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: Any = None,
) -> float:
    """The numeric `field` (e.g. `properties.value`) added up over the `name` events the contact
    did in [since, until] that match `where`; values that are not numbers are skipped."""
    rows = await s.scalars(_window(
        select(Event).where(Event.contact_id == contact_id, Event.name == name), since, until))
    total = 0.0
    for row in rows:
        scope = event_message(row).as_scope()
        if where is not None and not evaluate_event_filter(
            where, scope, until or row.timestamp
        ).result:
            continue
        value = event_field(scope, field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += value
    return total


async def mark_routed(s: AsyncSession, event_ids: Iterable[int], now: datetime) -> None:
    """Note that these events reached every journey that wanted them (and drop their claims)."""
    ids = list(event_ids)
    for start in range(0, len(ids), 500):
        await s.execute(
            update(Event)
            .where(Event.id.in_(ids[start:start + 500]), Event.routed_at.is_(None))
            .values(routed_at=now, routing_claimed_by=None, routing_claimed_at=None,
                    next_routing_at=None)
            .execution_options(synchronize_session=False)
        )


def _claimable(now: datetime, lease: timedelta) -> tuple[Any, ...]:
    """Unrouted, not quarantined, and claimed by nobody (or by a lapsed claim)."""
    return (
        Event.routed_at.is_(None),
        Event.quarantined_at.is_(None),
        or_(Event.routing_claimed_at.is_(None), Event.routing_claimed_at < now - lease),
    )


def _routable(now: datetime, lease: timedelta) -> tuple[Any, ...]:
    """Claimable, and due for a try (not waiting out the backoff after a failure)."""
    return (*_claimable(now, lease),
            or_(Event.next_routing_at.is_(None), Event.next_routing_at <= now))


async def claim_events(
    s: AsyncSession, event_ids: Iterable[int], claimant: str, now: datetime, lease: timedelta
) -> list[Event]:
    """Claim the events among these that nobody routes now for `claimant`; returns them by id.

    One conditional UPDATE per chunk, so of two routers claiming the same event (the API's
    background routing and the relay) exactly one gets it. A claim older than `lease` is taken
    as abandoned (its router died) and can be claimed again. `claimant` should be unique per
    call, so the rows read back are exactly the ones this call claimed. The backoff after a
    failure is not checked here: the relay picks only due events (`unrouted_events`), and a
    caller naming an event (a sweep retrying its batch) may try it at once.
    """
    ids = list(dict.fromkeys(event_ids))
    claimed: list[Event] = []
    if s.bind is not None and s.bind.dialect.update_returning:
        # one statement: the claim reads its rows back (PostgreSQL, SQLite 3.35 and later)
        for start in range(0, len(ids), 500):
            claimed.extend(await s.scalars(
                update(Event)
                .where(Event.id.in_(ids[start:start + 500]), *_claimable(now, lease))
                .values(routing_claimed_by=claimant, routing_claimed_at=now)
                .returning(Event)
                .execution_options(synchronize_session=False, populate_existing=True)
            ))
        return sorted(claimed, key=lambda row: row.id)
    await _claim(s, ids, claimant, now, lease)
    for start in range(0, len(ids), 500):
        claimed.extend(await s.scalars(
            select(Event).where(Event.id.in_(ids[start:start + 500]),
                                Event.routing_claimed_by == claimant,
                                Event.routed_at.is_(None))
            .execution_options(populate_existing=True)
        ))
    return sorted(claimed, key=lambda row: row.id)


@dataclass(frozen=True)
class ClaimedEvent:
    """What routing reads of a claimed event before it knows whether anything hears it."""

    id: int
    message_id: str
    contact_id: str
    name: str
    timestamp: datetime
    routing_attempts: int


async def claim_event_heads(
    s: AsyncSession, event_ids: Iterable[int], claimant: str, now: datetime, lease: timedelta
) -> list[ClaimedEvent]:
    """`claim_events`, reading back only the events' heads (not their properties): most events
    are heard by nothing, and routing one reads no more than this (`events_by_id` the rest)."""
    ids = await _claim(s, event_ids, claimant, now, lease)
    heads: list[ClaimedEvent] = []
    for start in range(0, len(ids), 500):
        heads.extend(ClaimedEvent(*row) for row in await s.execute(
            select(Event.id, Event.message_id, Event.contact_id, Event.name, Event.timestamp,
                   Event.routing_attempts)
            .where(Event.id.in_(ids[start:start + 500]), Event.routing_claimed_by == claimant,
                   Event.routed_at.is_(None))))
    return sorted(heads, key=lambda head: head.id)


async def routable_heads(
    s: AsyncSession, event_ids: Iterable[int], now: datetime, lease: timedelta
) -> list[ClaimedEvent]:
    """The heads of those of these events that are unrouted and claimed by nobody (nor by a
    lapsed claim), by id; nothing is claimed."""
    ids = list(dict.fromkeys(event_ids))
    heads: list[ClaimedEvent] = []
    for start in range(0, len(ids), 500):
        heads.extend(ClaimedEvent(*row) for row in await s.execute(
            select(Event.id, Event.message_id, Event.contact_id, Event.name, Event.timestamp,
                   Event.routing_attempts)
            .where(Event.id.in_(ids[start:start + 500]), *_claimable(now, lease))))
    return sorted(heads, key=lambda head: head.id)


async def mark_routed_if_unclaimed(
    s: AsyncSession, event_ids: Iterable[int], routed_at: datetime, now: datetime,
    lease: timedelta,
) -> list[int]:
    """Mark routed those of these events nobody claims (nor routed meanwhile); returns them."""
    ids = list(dict.fromkeys(event_ids))
    marked: list[int] = []
    for start in range(0, len(ids), 500):
        marked.extend(await s.scalars(
            update(Event)
            .where(Event.id.in_(ids[start:start + 500]), *_claimable(now, lease))
            .values(routed_at=routed_at, next_routing_at=None)
            .returning(Event.id)
            .execution_options(synchronize_session=False)))
    return marked


async def events_by_id(s: AsyncSession, event_ids: Iterable[int]) -> list[Event]:
    """Stored events by id, in id order."""
    ids = list(dict.fromkeys(event_ids))
    found: list[Event] = []
    for start in range(0, len(ids), 500):
        found.extend(await s.scalars(select(Event).where(Event.id.in_(ids[start:start + 500]))))
    return sorted(found, key=lambda row: row.id)


async def _claim(
    s: AsyncSession, event_ids: Iterable[int], claimant: str, now: datetime, lease: timedelta
) -> list[int]:
    ids = list(dict.fromkeys(event_ids))
    for start in range(0, len(ids), 500):
        await s.execute(
            update(Event)
            .where(Event.id.in_(ids[start:start + 500]), *_claimable(now, lease))
            .values(routing_claimed_by=claimant, routing_claimed_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


async def renew_claims(s: AsyncSession, claimant: str, now: datetime) -> None:
    """Extend the lease of the claims `claimant` still holds."""
    await s.execute(
        update(Event)
        .where(Event.routing_claimed_by == claimant, Event.routed_at.is_(None))
        .values(routing_claimed_at=now)
        .execution_options(synchronize_session=False)
    )


async def release_claims(s: AsyncSession, event_ids: Iterable[int], claimant: str) -> None:
    """Give back claims without routing (the events wait for a later try)."""
    ids = list(event_ids)
    for start in range(0, len(ids), 500):
        await s.execute(
            update(Event)
            .where(Event.id.in_(ids[start:start + 500]), Event.routing_claimed_by == claimant)
            .values(routing_claimed_by=None, routing_claimed_at=None)
            .execution_options(synchronize_session=False)
        )


async def first_failing_by_contact(s: AsyncSession, contact_ids: Iterable[str]) -> dict[str, int]:
    """Per contact, the oldest event whose routing failed and that waits for its next try (not
    routed, not quarantined). A contact's events are routed in order: later ones wait for it."""
    contacts = list(dict.fromkeys(contact_ids))
    found: dict[str, int] = {}
    for start in range(0, len(contacts), 500):
        rows = await s.execute(
            select(Event.contact_id, func.min(Event.id))
            .where(Event.contact_id.in_(contacts[start:start + 500]),
                   Event.routing_attempts > 0, Event.routed_at.is_(None),
                   Event.quarantined_at.is_(None))
            .group_by(Event.contact_id)
        )
        found.update({contact: int(first) for contact, first in rows})
    return found


async def record_routing_failure(
    s: AsyncSession,
    event_id: int,
    *,
    error: str,
    now: datetime,
    next_try: datetime | None,
) -> int:
    """Count a failed routing attempt; `next_try=None` quarantines the event. Returns attempts."""
    await s.execute(
        update(Event)
        .where(Event.id == event_id)
        .values(routing_attempts=Event.routing_attempts + 1, routing_error=error,
                next_routing_at=next_try, quarantined_at=None if next_try else now,
                routing_claimed_by=None, routing_claimed_at=None)
        .execution_options(synchronize_session=False)
    )
    attempts = await s.scalar(select(Event.routing_attempts).where(Event.id == event_id))
    return int(attempts or 0)


async def unrouted_events(
    s: AsyncSession,
    limit: int = 100,
    *,
    now: datetime | None = None,
    lease: timedelta = timedelta(0),
    after_id: int = 0,
    received_before: datetime | None = None,
) -> list[Event]:
    """Accepted events still waiting to be routed, oldest first (quarantined ones excluded).

    With `now`, only those routable at that moment (due, and not claimed within `lease`).
    """
    query = select(Event).where(Event.routed_at.is_(None), Event.quarantined_at.is_(None),
                                Event.id > after_id)
    if now is not None:
        query = query.where(*_routable(now, lease))
    if received_before is not None:
        query = query.where(Event.received_at <= received_before)
    rows = await s.scalars(query.order_by(Event.id).limit(limit))
    return list(rows)


async def unrouted_event_ids(
    s: AsyncSession, limit: int, *, now: datetime, lease: timedelta, after_id: int = 0,
    received_before: datetime | None = None,
) -> list[int]:
    """`unrouted_events` (routable at `now`), ids only: what a relay hands to the router."""
    query = select(Event.id).where(Event.routed_at.is_(None), Event.quarantined_at.is_(None),
                                   Event.id > after_id, *_routable(now, lease))
    if received_before is not None:
        query = query.where(Event.received_at <= received_before)
    return list(await s.scalars(query.order_by(Event.id).limit(limit)))


async def unrouted_among(s: AsyncSession, event_ids: Iterable[int]) -> list[int]:
    """Which of these events are still waiting to be routed."""
    return list(await s.scalars(
        select(Event.id).where(Event.id.in_(list(event_ids)), Event.routed_at.is_(None))
    ))


async def mark_routed_if_claimed(s: AsyncSession, event_ids: list[int], claimant: str,
                                 now: datetime) -> set[str]:
    """Mark routed those of these events `claimant` still holds; returns their message ids
    (an event whose claim lapsed and that another router took is not marked)."""
    marked: set[str] = set()
    for start in range(0, len(event_ids), 500):
        marked.update(await s.scalars(
            update(Event)
            .where(Event.id.in_(event_ids[start:start + 500]),
                   Event.routing_claimed_by == claimant, Event.routed_at.is_(None))
            .values(routed_at=now, routing_claimed_by=None, routing_claimed_at=None,
                    next_routing_at=None)
            .returning(Event.message_id)
            .execution_options(synchronize_session=False)))
    return marked


async def events_by_message_ids(s: AsyncSession, message_ids: list[str]) -> list[Event]:
    """The stored events of these message ids, by id."""
    found: list[Event] = []
    for start in range(0, len(message_ids), 500):
        found += await s.scalars(select(Event).where(
            Event.message_id.in_(message_ids[start:start + 500])))
    return sorted(found, key=lambda row: row.id)


async def quarantined_events(s: AsyncSession, limit: int = 100, after_id: int = 0) -> list[Event]:
    """Events set aside after too many failed routing attempts, oldest first."""
    rows = await s.scalars(
        select(Event).where(Event.quarantined_at.is_not(None), Event.routed_at.is_(None),
                            Event.id > after_id)
        .order_by(Event.id).limit(limit)
    )
    return list(rows)


async def release_from_quarantine(s: AsyncSession, event_ids: Iterable[int] | None) -> list[int]:
    """Put quarantined events (all of them with None) back in line with fresh attempts; returns
    the ids released."""
    query = select(Event.id).where(Event.quarantined_at.is_not(None), Event.routed_at.is_(None))
    if event_ids is not None:
        query = query.where(Event.id.in_(list(event_ids)))
    ids = list(await s.scalars(query.order_by(Event.id)))
    for start in range(0, len(ids), 500):
        await s.execute(
            update(Event)
            .where(Event.id.in_(ids[start:start + 500]))
            .values(quarantined_at=None, routing_attempts=0, next_routing_at=None,
                    routing_claimed_by=None, routing_claimed_at=None)
            .execution_options(synchronize_session=False)
        )
    return ids


def event_message(event: Event) -> EventMessage:
    """A stored event as journeys hear it."""
    return EventMessage(
        message_id=event.message_id,
        event=event.name,
        contact_id=event.contact_id,
        properties=dict(event.properties or {}),
        timestamp=event.timestamp,
        event_id=event.id,
    )


async def reattribute_events(s: AsyncSession, from_contact_id: str, to_contact_id: str) -> int:
    """Move every event of one contact to another (an alias: anonymous visitor -> signed-up user).

    Afterwards `count_events` for the user counts what the visitor did before signing up.
    Returns how many events moved.
    """
    moved = await s.execute(
        update(Event)
        .where(Event.contact_id == from_contact_id)
        .values(contact_id=to_contact_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(moved, "rowcount", 0) or 0)


async def erase_events(s: AsyncSession, contact_id: str) -> int:
    """Delete every event of a contact (erasure); returns how many were deleted."""
    deleted = await s.execute(
        delete(Event)
        .where(Event.contact_id == contact_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(deleted, "rowcount", 0) or 0)
