"""Routing exactly once: the API's background routing and the relay never route one event twice.

Both reach for the same events at the same moment (the API's routing of a batch it accepted, in
small steps, while relay passes run back to back on a second router); every event is claimed by
one of them and routed once, so each contact has exactly one entry in the journey.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from cairn.events import relay as relay_module
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.relay import EventRelay
from cairn.events.router import Router
from cairn.journey_run import workflow_id
from cairn.settings import Settings
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Entry, Event
from starter.api.app import create_app
from tests.api_support import admin
from tests.engine_support import T0, unique
from tests.events.test_relay import engine, publish_waiting_journey

CONTACTS = 60


async def unrouted_ids(store: Store) -> list[int]:
    async with store.session() as session:
        return list(await session.scalars(
            select(Event.id).where(Event.routed_at.is_(None)).order_by(Event.id)))


async def test_api_routing_and_relay_passes_at_once_enter_each_contact_once(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    key = unique("once")
    contacts = [unique("c") for _ in range(CONTACTS)]
    await publish_waiting_journey(store, key)
    async with engine(temporal_env, store) as api_ingest:
        assert api_ingest.router is not None
        # The relay routes with its own router (as `cairn api` in a second process would).
        relay_router = Router(temporal_env.client, store, task_queue=api_ingest.router.task_queue,
                              delivery_task_queue=api_ingest.router.delivery_task_queue)
        relay = EventRelay(Ingest(store, relay_router), store, grace=timedelta(0))
        app = create_app(store, api_ingest, settings=Settings(database_url=store.url))
        calls = [
            {"type": "track", "userId": contact, "event": "cart_item_added",
             "messageId": f"m-{contact}", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}
            for i, contact in enumerate(contacts)
        ]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test",
                                     auth=admin(app.state.store)) as api:
            # Stored first without routing (the API's background routing is what races below).
            api_ingest.router, router = None, api_ingest.router
            answer = await api.post("/v1/batch", json={"batch": calls})
            api_ingest.router = router
        assert answer.status_code == 200, answer.text
        ids = await unrouted_ids(store)
        assert len(ids) == CONTACTS

        # The API's background routing takes the events in small batches, from the newest,
        # while the relay passes run back to back, from the oldest, in batches of the same size.
        monkeypatch.setattr(relay_module, "BATCH_SIZE", 5)
        api_routed: list[int] = []
        relay_routed: list[int] = []

        async def api_routing() -> None:
            for end in range(len(ids), 0, -5):
                api_routed.append(len(await api_ingest.route_events(ids[max(0, end - 5):end])))

        async def relay_passes() -> None:
            while await unrouted_ids(store):
                relay_routed.append(await relay.pass_once())

        await asyncio.wait_for(asyncio.gather(api_routing(), relay_passes()), 120)
        assert await unrouted_ids(store) == []
        assert sum(api_routed) + sum(relay_routed) == CONTACTS, "an event was routed twice"
        assert sum(api_routed) > 0 and sum(relay_routed) > 0, "one router did all: no race"

        async with store.session() as session:
            entries = list(await session.scalars(select(Entry).where(Entry.journey_key == key)))
        per_workflow = Counter(entry.workflow_id for entry in entries)
        assert set(per_workflow) == {workflow_id(key, contact) for contact in contacts}
        assert [wid for wid, count in per_workflow.items() if count > 1] == []


async def test_a_claim_is_exclusive_until_its_lease_lapses(store: Store) -> None:
    ingest = Ingest(store, None)
    stored = await ingest.batch([TrackCall(user_id=unique("c"), event="signup", timestamp=T0)
                                 for _ in range(3)], route=False)
    ids = [result.event_id for result in stored]
    lease = timedelta(seconds=30)
    now = datetime.now(UTC)
    async with store.session() as session, session.begin():
        first = await events_repo.claim_events(session, ids, "api", now, lease)
    async with store.session() as session, session.begin():
        second = await events_repo.claim_events(session, ids, "relay", now, lease)
    assert [row.id for row in first] == ids and second == []

    later = now + lease + timedelta(seconds=1)  # the first claimant died: its claims lapse
    async with store.session() as session, session.begin():
        taken = await events_repo.claim_events(session, ids, "relay", later, lease)
        await events_repo.mark_routed(session, [ids[0]], later)
    assert [row.id for row in taken] == ids
    async with store.session() as session, session.begin():
        after = await events_repo.claim_events(session, ids, "other", later + 2 * lease, lease)
    assert [row.id for row in after] == ids[1:], "a routed event is never claimed again"
