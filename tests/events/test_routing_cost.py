"""What a track call that starts a run writes: the event stored and claimed for routing in one
transaction, the entry in one, the routing mark (with the entry's twin check) in one.

Routing right after storing needs no claim round of its own: nobody else can hold a claim on an
event the same transaction inserted. Each guarantee stays: the event is routed once and marked,
the contact has one entry, a second router finds nothing to claim.
"""

from __future__ import annotations

from collections import Counter

import pytest
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


async def test_one_delete_drops_the_twins_of_many_entries_and_keeps_failed_history(
    sqlite_store: Store,
) -> None:
    """Two routers that raced on one event each recorded an entry: the oldest row stays. A
    failed entry re-entered with the same event is history and stays too. One statement for a
    whole routing pass."""
    from cairn.events.router import drop_twins
    from cairn.store import entries as entries_repo

    key = unique("twins")
    pairs = [(workflow_id(key, f"c{i}"), f"m{i}") for i in range(3)]
    async with sqlite_store.session() as s, s.begin():
        # c2: an entry that failed, then the entry that re-entered with the same event
        failed = await entries_repo.record_entry(
            s, journey_key=key, version=1, contact_id="c2", entry_key=None,
            workflow_id=pairs[2][0], trigger_message_id=pairs[2][1], entered_at=T0)
        failed.outcome, failed.ended_at = f"{entries_repo.FAILED}: boom", T0
        for i, (wid, message) in enumerate(pairs):
            for _ in range(2 if i < 2 else 1):  # c0 and c1: twins
                await entries_repo.record_entry(
                    s, journey_key=key, version=1, contact_id=f"c{i}", entry_key=None,
                    workflow_id=wid, trigger_message_id=message, entered_at=T0)
    counted = Statements(sqlite_store)
    try:
        async with sqlite_store.session() as s, s.begin():
            await drop_twins(s, pairs)
    finally:
        counted.close()
    assert counted.count("DELETE FROM entries") == 1
    async with sqlite_store.session() as s:
        rows = (await s.execute(select(Entry).where(Entry.journey_key == key)
                                .order_by(Entry.id))).scalars().all()
    kept = [(row.contact_id, row.outcome is not None) for row in rows]
    assert kept == [("c2", True), ("c0", False), ("c1", False), ("c2", False)]


async def test_a_routing_pass_records_its_entries_in_few_transactions_and_each_alone_on_failure(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contacts routed side by side record their entries together (a group commit): far fewer
    write transactions than entries. Should a shared one fail, each entry is written alone, and
    only the one that fails on its own is lost to its event (which stays unrouted for a retry)."""
    from cairn.events.router import Router

    store = sqlite_store
    key = unique("grouped")
    await publish_waiting_journey(store, key)
    contacts = [unique("c") for _ in range(20)]
    async with engine(temporal_env, store) as ingest:
        stored = await ingest.batch([TrackCall(user_id=c, event="cart_item_added",
                                               message_id=unique("m"), timestamp=T0)
                                     for c in contacts], route=False)
        counted = Statements(store)
        try:
            routed = await ingest.route_events([r.event_id for r in stored])
        finally:
            counted.close()
        assert sorted(d.action for ds in routed.values() for d in ds) == ["started"] * 20
        assert counted.commits < 12, (counted.commits, counted.texts)  # a commit each: 22

        # A shared transaction that fails: each entry is written again on its own; the one
        # that fails alone too is its event's failure, the others enter.
        unlucky = unique("c")
        original = Router._write_entry_rows

        async def flaky(self: Router, rows: list[Entry]) -> list[int]:
            if len(rows) > 1 or rows[0].contact_id == unlucky:
                raise RuntimeError("the store refused the write")
            return await original(self, rows)

        monkeypatch.setattr(Router, "_write_entry_rows", flaky)
        more = [unique("c") for _ in range(5)] + [unlucky]
        stored = await ingest.batch([TrackCall(user_id=c, event="cart_item_added",
                                               message_id=unique("m"), timestamp=T0)
                                     for c in more], route=False)
        routed = await ingest.route_events([r.event_id for r in stored])
        entered = {d.workflow_id for ds in routed.values() for d in ds if d.action == "started"}
        assert entered == {workflow_id(key, c) for c in more if c != unlucky}
        async with store.session() as session:
            rows = list(await session.scalars(select(Entry).where(Entry.journey_key == key)))
            failed = await session.scalar(select(Event).where(
                Event.contact_id == unlucky, Event.name == "cart_item_added"))
        assert sorted(r.contact_id for r in rows) == sorted(contacts + more[:-1])
        assert failed is not None and failed.routed_at is None and failed.routing_attempts == 1
