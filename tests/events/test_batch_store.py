"""A batch's plain event calls are stored set-based (`Ingest._store_plain`); what they leave in
the store must be exactly what storing them one call at a time leaves.

Each test plays the same calls twice in one store, under two prefixes: once as one batch, once
call by call, and compares the stored rows with the prefix taken off and event ids replaced by
their rank (so the order of ids is compared, not their values).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cairn.events.calls import (
    AliasCall,
    IdentifyCall,
    PageCall,
    ScreenCall,
    SegmentCallType,
    TrackCall,
)
from cairn.events.ingest import Ingest, IngestResult
from cairn.store.db import Store
from cairn.store.schema import Contact, Event
from tests.engine_support import T0


def _at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _setup(p: str) -> list[SegmentCallType]:
    """Stored before the batch: a known contact, an alias, a message id already stored."""
    return [
        IdentifyCall.model_validate({"userId": f"{p}known", "traits": {"plan": "free"},
                                     "timestamp": _at(10), "messageId": f"{p}s1"}),
        AliasCall.model_validate({"previousId": f"{p}anon1", "userId": f"{p}user1",
                                  "timestamp": _at(8), "messageId": f"{p}s2"}),
        TrackCall.model_validate({"userId": f"{p}known", "event": "opened",
                                  "timestamp": _at(5), "messageId": f"{p}m0"}),
    ]


def _batch(p: str) -> list[SegmentCallType]:
    return [
        TrackCall.model_validate({"userId": f"{p}new1", "event": "signed_up",
                                  "properties": {"n": 1}, "timestamp": _at(3),
                                  "messageId": f"{p}m1"}),
        TrackCall.model_validate({"anonymousId": f"{p}anon1", "event": "browsed",
                                  "timestamp": _at(1), "messageId": f"{p}m2"}),
        PageCall.model_validate({"userId": f"{p}known", "name": "home",
                                 "properties": {"url": "https://x.test/"},
                                 "timestamp": _at(1), "messageId": f"{p}m3"}),
        # against a stored row, then inside the batch (the first one wins)
        TrackCall.model_validate({"userId": f"{p}known", "event": "other",
                                  "timestamp": _at(0), "messageId": f"{p}m0"}),
        TrackCall.model_validate({"userId": f"{p}new1", "event": "again",
                                  "timestamp": _at(30), "messageId": f"{p}m1"}),
        TrackCall.model_validate({"userId": f"{p}new1", "event": "earlier",
                                  "timestamp": _at(2), "messageId": f"{p}m4"}),
        IdentifyCall.model_validate({"userId": f"{p}new1", "traits": {"plan": "pro"},
                                     "timestamp": _at(4), "messageId": f"{p}m5"}),
        ScreenCall.model_validate({"userId": f"{p}new1", "name": "cart",
                                   "timestamp": _at(6), "messageId": f"{p}m6"}),
        TrackCall.model_validate({"anonymousId": f"{p}anon2", "event": "browsed",
                                  "timestamp": _at(2), "messageId": f"{p}m7"}),
        TrackCall.model_validate({"userId": f"{p}known", "event": "bought",
                                  "timestamp": _at(20), "messageId": f"{p}m8"}),
        TrackCall.model_validate({"anonymousId": f"{p}anon2", "event": "no_time",
                                  "messageId": f"{p}m9"}),
        TrackCall.model_validate({"userId": f"{p}new1", "event": "signed_up",
                                  "timestamp": _at(3), "messageId": f"{p}m6"}),
        # an identify after a run that saw the same contact, then another run
        IdentifyCall.model_validate({"userId": f"{p}new1", "traits": {"tier": 2},
                                     "timestamp": _at(-5), "messageId": f"{p}m10"}),
        TrackCall.model_validate({"userId": f"{p}new1", "event": "late",
                                  "timestamp": _at(40), "messageId": f"{p}m11"}),
    ]


async def _stored(store: Store, p: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    def bare(value: str) -> str:
        return value.removeprefix(p)

    async with store.session() as s:
        events = (await s.scalars(select(Event).where(Event.message_id.like(f"{p}m%"))
                                  .order_by(Event.id))).all()
        contacts = (await s.scalars(select(Contact).where(Contact.id.like(f"{p}%"))
                                    .order_by(Contact.id))).all()
    return (
        [(bare(e.message_id), e.type, bare(e.contact_id), e.name, e.properties, e.timestamp,
          e.routed_at is not None) for e in events],
        [(bare(c.id), c.anonymous_id and bare(c.anonymous_id), c.first_seen_at, c.last_seen_at,
          c.created_at, c.updated_at, c.attributes) for c in contacts],
    )


def _answers(results: list[IngestResult], p: str) -> list[tuple[str, int, bool]]:
    ranks = {event_id: rank for rank, event_id in enumerate(sorted({r.event_id
                                                                     for r in results}))}
    return [(r.message_id.removeprefix(p), ranks[r.event_id], r.duplicate) for r in results]


async def test_a_batch_stores_what_one_call_at_a_time_stores(store: Store) -> None:
    ingest = Ingest(store, router=None, clock=lambda: T0 + timedelta(hours=1))
    for p in ("a-", "b-"):
        await ingest.batch(_setup(p), route=False)

    in_batch = await ingest.batch(_batch("a-"), route=False)
    one_by_one = [(await ingest.batch([call], route=False))[0] for call in _batch("b-")]

    assert _answers(in_batch, "a-") == _answers(one_by_one, "b-")
    assert [r.duplicate for r in in_batch] == [False, False, False, True, True, False, False,
                                               False, False, False, False, True, False,
                                               False]
    assert in_batch[4].event_id == in_batch[0].event_id  # the first m1 won
    batch_events, batch_contacts = await _stored(store, "a-")
    single_events, single_contacts = await _stored(store, "b-")
    assert batch_events == single_events
    assert batch_contacts == single_contacts
    # what the batch stored, spelled out: anon1 is user1's, new1 created at its first sighting
    # and widened by the earlier one, known widened both ways, m1 kept its first version
    by_message = {row[0]: row for row in batch_events}
    assert by_message["m2"][2] == "user1"
    assert by_message["m1"][3] == "signed_up"
    assert by_message["m0"][3] == "opened"
    assert by_message["m6"][3] == "screen_viewed"  # the later m6 answered duplicate
    contacts = {row[0]: row for row in batch_contacts}
    assert contacts["new1"][2:5] == (T0 + timedelta(minutes=-5), T0 + timedelta(minutes=40),
                                     T0 + timedelta(minutes=3))
    assert contacts["new1"][6] == {"plan": "pro", "tier": 2}
    assert contacts["known"][2:4] == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=20))
    assert contacts["anon2"][2:4] == (T0 + timedelta(minutes=2), T0 + timedelta(hours=1))
    assert "anon1" not in contacts
    # each contact's events have ids ascending in call order
    new1 = [row[0] for row in batch_events if row[2] == "new1"]
    assert new1 == ["m1", "m4", "m5", "m6", "m10", "m11"]


async def test_a_batch_of_tracks_only_answers_in_call_order(store: Store) -> None:
    ingest = Ingest(store, router=None, clock=lambda: T0)
    calls = [TrackCall.model_validate({"userId": f"u{i % 7}", "event": "e",
                                       "timestamp": _at(60 - i), "messageId": f"m{i}"})
             for i in range(120)]
    results = await ingest.batch(calls, route=False)
    assert [r.message_id for r in results] == [f"m{i}" for i in range(120)]
    assert not any(r.duplicate for r in results)
    ids = [r.event_id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 120
    async with store.session() as s:
        rows = {e.id: e.message_id for e in await s.scalars(select(Event))}
        contacts = {c.id: c for c in await s.scalars(select(Contact))}
    assert [rows[i] for i in ids] == [f"m{i}" for i in range(120)]
    assert sorted(contacts) == [f"u{i}" for i in range(7)]
    # u0 saw m0 (T0+60), ..., m119 (T0-59): first sighting created it, the span is widened
    u0 = contacts["u0"]
    assert (u0.first_seen_at, u0.last_seen_at, u0.created_at) == (
        T0 + timedelta(minutes=60 - 119), T0 + timedelta(minutes=60), T0 + timedelta(minutes=60))
    again = await ingest.batch(calls[:3], route=False)
    assert [(r.event_id, r.duplicate) for r in again] == [(i, True) for i in ids[:3]]


async def test_concurrent_batches_on_the_same_contacts_lose_no_sighting(store: Store) -> None:
    import asyncio

    ingest = Ingest(store, router=None, clock=lambda: T0)

    def calls(side: int) -> list[SegmentCallType]:
        return [TrackCall.model_validate({"userId": f"u{i % 10}", "event": "e",
                                          "timestamp": _at(side * 100 + i),
                                          "messageId": f"s{side}-{i}"}) for i in range(50)]

    await ingest.batch([TrackCall.model_validate({"userId": "u0", "event": "e",
                                                  "timestamp": _at(500), "messageId": "first"})],
                       route=False)
    answers = await asyncio.gather(*(ingest.batch(calls(side), route=False)
                                     for side in range(4)))
    assert all(not r.duplicate for results in answers for r in results)
    async with store.session() as s:
        stored = {e.message_id for e in await s.scalars(select(Event))}
        contacts = {c.id: c for c in await s.scalars(select(Contact))}
    assert stored == {"first"} | {f"s{side}-{i}" for side in range(4) for i in range(50)}
    assert sorted(contacts) == [f"u{i}" for i in range(10)]
    for i in range(10):
        seen = (contacts[f"u{i}"].first_seen_at, contacts[f"u{i}"].last_seen_at)
        assert seen == (T0 + timedelta(minutes=i),
                        T0 + timedelta(minutes=500 if i == 0 else 300 + 40 + i)), i
