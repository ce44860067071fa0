"""What a track call that starts a run writes: the event stored and claimed for routing in one
transaction, the entry in one, the routing mark (with the entry's twin check) in one.

Routing right after storing needs no claim round of its own: nobody else can hold a claim on an
event the same transaction inserted. Each guarantee stays: the event is routed once and marked,
the contact has one entry, a second router finds nothing to claim.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import event as orm_event
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from cairn.events.calls import TrackCall
from cairn.journey_run import workflow_id
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Entry, Event
from tests.engine_support import T0, unique
from tests.events.test_relay import engine, publish_waiting_journey


class Statements:
    """Statements and commits on the store's engine while counting."""

    def __init__(self, store: Store) -> None:
        self.texts: Counter[str] = Counter()
        self.commits = 0
        engine_ = store.engine.sync_engine
        orm_event.listen(engine_, "before_cursor_execute", self._statement)
        orm_event.listen(engine_, "commit", self._commit)
        self._engine = engine_

    def _statement(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        self.texts[" ".join(statement.split())[:40]] += 1

    def _commit(self, *_: object) -> None:
        self.commits += 1

    def close(self) -> None:
        orm_event.remove(self._engine, "before_cursor_execute", self._statement)
        orm_event.remove(self._engine, "commit", self._commit)

    def count(self, prefix: str) -> int:
        return sum(n for text, n in self.texts.items() if text.startswith(prefix))


async def test_a_track_call_that_starts_a_run_claims_in_its_storing_transaction(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    store = sqlite_store
    key, contact = unique("cost"), unique("c")
    await publish_waiting_journey(store, key)
    async with engine(temporal_env, store) as ingest:
        await ingest.route_events([])  # nothing to route: no statement, no error
        counted = Statements(store)
        try:
            result = await ingest.track(TrackCall(user_id=contact, event="cart_item_added",
                                                  message_id=unique("m"), timestamp=T0))
        finally:
            counted.close()
        assert [r.action for r in result.routes] == ["started"]
        assert result.routed

        async with store.session() as session:
            row = await session.scalar(select(Event).where(Event.id == result.event_id))
            entries = list(await session.scalars(
                select(Entry).where(Entry.workflow_id == workflow_id(key, contact))))
        assert row is not None and row.routed_at is not None
        assert row.routing_claimed_by is None
        assert len(entries) == 1 and entries[0].trigger_message_id == result.message_id

        # three write transactions: event + contact + claim, entry, routing mark + twins
        assert counted.commits == 3, counted.texts
        assert counted.count("UPDATE events SET routing_claimed_by") == 1
        assert counted.count("SAVEPOINT") == 0
        assert counted.count("UPDATE contacts") == 0  # the contact is seen by one upsert
        assert counted.count("DELETE FROM entries") == 1
        assert counted.count("SELECT min(entries.id)") == 0  # the twin check is one DELETE

        # Routed once: a second pass over the same event claims nothing and starts nothing.
        again = await ingest.route_events([result.event_id])
        assert again == {}
        async with store.session() as session:
            assert await events_repo.unrouted_among(session, [result.event_id]) == []
            assert len(list(await session.scalars(
                select(Entry).where(Entry.workflow_id == workflow_id(key, contact))))) == 1
