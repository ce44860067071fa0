"""The router finds or creates a contact's data key in the transaction that records its entry,
so starting a run costs no transaction of its own for the key; the key is used only once that
transaction committed, and the run's payloads decrypt with it."""

from __future__ import annotations

import asyncio

from sqlalchemy import event as orm_event
from sqlalchemy import select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from cairn.events.router import Router
from cairn.journey_run import EventMessage, JourneyResult, workflow_id
from cairn.privacy.codec import cairn_data_converter, data_key_id
from cairn.privacy.keys import DataKeys, MasterKeyRing, SqlDataKeyStore, contact_owner
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from cairn.store.schema import DataKey, Delivery
from starter.worker import journey_workers, running
from tests.engine_support import T0, publish, terminate_leftovers, unique


async def test_the_entry_and_the_contacts_key_commit_together_and_the_run_reads_it(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key, contact = unique("keyed"), unique("c")
    async with store.session() as s, s.begin():
        await contacts_repo.identify(s, contact, {"email": f"{contact}@example.com"}, T0)
    await publish(store, {
        "key": key, "name": key, "trigger": {"event": "go"},
        "templates": {"hi": {"email": {"subject": "Hi", "body": "Hello"}}},
        "steps": {"hello": {"send": {"channel": "email", "template": "hi",
                                     "category": "transactional"}, "next": "end"}},
    })
    # As `cairn api` and `cairn worker` have them: keys in the store's database, whose own
    # connection opens (and migrates) on first use, which must not wait for the entry's write.
    keys = DataKeys(MasterKeyRing.ephemeral(), SqlDataKeyStore(url=store.url))
    client = Client(temporal_env.client.service_client, namespace=temporal_env.client.namespace,
                    data_converter=cairn_data_converter(keys))
    steps: list[str] = []

    def statement(_c: object, _k: object, text: str, *_: object) -> None:
        steps.append(" ".join(text.split())[:24])

    def commit(*_: object) -> None:
        steps.append("COMMIT")

    engine = store.engine.sync_engine
    orm_event.listen(engine, "before_cursor_execute", statement)
    orm_event.listen(engine, "commit", commit)
    queue = unique("journeys")
    try:
        async with running(journey_workers(client, store, journey_queue=queue,
                                           delivery_queue=f"{queue}-delivery")):
            router = Router(client, store, task_queue=queue,
                            delivery_task_queue=f"{queue}-delivery")
            decisions = await asyncio.wait_for(router.route(EventMessage(
                message_id=unique("m"), event="go", contact_id=contact, properties={},
                timestamp=T0)), timeout=10)
            assert [d.action for d in decisions] == ["started"]
            wid = workflow_id(key, contact)
            result = await client.get_workflow_handle(wid, result_type=JourneyResult).result()
            history = await client.get_workflow_handle(wid).fetch_history()
    finally:
        orm_event.remove(engine, "before_cursor_execute", statement)
        orm_event.remove(engine, "commit", commit)
        await terminate_leftovers(client, store)
        assert isinstance(keys.store, SqlDataKeyStore)
        await keys.store.close()
    assert result.outcome == "completed"
    # the key was written in the entry's transaction, before its commit
    entry = steps.index(next(s for s in steps if s.startswith("INSERT INTO entries")))
    committed = steps.index("COMMIT", entry)
    assert any(s.startswith("INSERT INTO data_keys") for s in steps[entry:committed])
    async with store.session() as s:
        owned = (await s.execute(select(DataKey).where(
            DataKey.owner == contact_owner(contact)))).scalars().all()
        sent = (await s.execute(select(Delivery).where(Delivery.workflow_id == wid))).scalars()
        assert [row.status for row in sent] == ["sent"]
    assert len(owned) == 1
    # the run's input is under that key (and decrypted: the run sent)
    started = history.events[0].workflow_execution_started_event_attributes
    assert data_key_id(started.input.payloads[0]) == owned[0].id
