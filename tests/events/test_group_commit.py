"""Single calls that arrive together are stored in one transaction (a group commit), each
answered as if it had been stored alone: its own event, duplicates named, failures its own."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, func, select

from cairn.events.calls import AliasCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.store.db import Store
from cairn.store.identity import AliasError
from cairn.store.schema import Event
from tests.engine_support import unique


def commits(store: Store) -> list[int]:
    counted: list[int] = []
    event.listen(store.engine.sync_engine, "commit", lambda _connection: counted.append(1))
    return counted


async def test_calls_arriving_together_share_a_transaction_and_keep_their_own_answers(
    store: Store,
) -> None:
    ingest = Ingest(store, None)
    contact = unique("c")
    calls = [TrackCall(user_id=contact, event="clicked", message_id=unique("m"),
                       properties={"n": n}) for n in range(20)]
    counted = commits(store)
    results = await asyncio.gather(*(ingest.track(call, route=False) for call in calls))
    assert len(counted) < len(calls), "every call had its own transaction"
    assert [r.message_id for r in results] == [c.message_id for c in calls]
    assert len({r.event_id for r in results}) == 20 and not any(r.duplicate for r in results)
    async with store.session() as session:
        stored = await session.scalar(select(func.count()).select_from(Event)
                                      .where(Event.contact_id == contact))
    assert stored == 20


async def test_the_same_message_twice_in_a_group_is_stored_once(store: Store) -> None:
    ingest = Ingest(store, None)
    call = TrackCall(user_id=unique("c"), event="clicked", message_id=unique("m"))
    first, again = await asyncio.gather(ingest.track(call, route=False),
                                        ingest.track(call, route=False))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.event_id == again.event_id


async def test_a_call_that_fails_fails_alone(store: Store) -> None:
    ingest = Ingest(store, None)
    contact = unique("c")
    tracks = [TrackCall(user_id=contact, event="clicked", message_id=unique("m"))
              for _ in range(5)]
    # The store refuses an id aliased to itself (the API's model refuses it before; built
    # here without the model's check, as a call the store fails on).
    bad = AliasCall.model_construct(previous_id=contact, user_id=contact, message_id=unique("m"))
    answers = await asyncio.gather(*(ingest.track(call, route=False) for call in tracks[:3]),
                                   ingest.alias(bad),
                                   *(ingest.track(call, route=False) for call in tracks[3:]),
                                   return_exceptions=True)
    assert isinstance(answers[3], AliasError)
    stored = [answer for answer in answers if not isinstance(answer, BaseException)]
    assert len(stored) == 5 and not any(answer.duplicate for answer in stored)
    with pytest.raises(AliasError):
        await ingest.alias(bad)
