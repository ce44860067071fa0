"""What one journey run costs Temporal: the lean sequence of commands (`workflows.run`).

A run the router starts waits at its first step (whose `CairnStep` the router set at start),
decides an `if` in a local activity, plans and sends in one `deliver_message` and closes its entry
in a local activity: one regular activity, two local ones, no search-attribute upsert.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from cairn import search_attributes
from cairn.journey_run import EventMessage, workflow_id
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery
from tests.engine_support import T0, engine, finished, publish, unique

LOCAL_ACTIVITY_MARKER = "core_local_activity"


async def test_a_routed_run_waits_decides_and_sends_with_one_activity(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    key, contact = unique("lean"), unique("c")
    async with sqlite_store.session() as s, s.begin():
        await contacts_repo.identify(s, contact, {"email": f"{contact}@example.com",
                                                  "plan": "pro"}, T0)
    await publish(sqlite_store, {
        "key": key, "name": "Lean", "trigger": {"event": "go"},
        "templates": {"hi": {"email": {"subject": "Hi", "body": "Plan {{ contact.plan }}"}}},
        "steps": {
            "pause": {"wait": "1h", "next": "check"},
            "check": {"if": {"attribute": "plan", "eq": "pro"}, "then": "hello", "else": "end"},
            "hello": {"send": {"channel": "email", "template": "hi",
                               "category": "transactional"}, "next": "end"},
        },
    })
    async with engine(temporal_env, sqlite_store) as router:
        await router.route(EventMessage(message_id=unique("m"), event="go", contact_id=contact,
                                        properties={}, timestamp=T0))
        wid = workflow_id(key, contact)
        await temporal_env.sleep(timedelta(hours=2))
        result = await finished(temporal_env, wid)
        handle = temporal_env.client.get_workflow_handle(wid)
        history = await handle.fetch_history()
        description = await handle.describe()

    assert result.outcome == "completed"
    assert [entry.step for entry in result.path] == ["pause", "check", "hello"]
    kinds = [event.event_type for event in history.events]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled == ["deliver_message"]
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert markers == [LOCAL_ACTIVITY_MARKER, LOCAL_ACTIVITY_MARKER]  # if, finish_entry
    assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds
    assert kinds.count(EventType.EVENT_TYPE_TIMER_STARTED) == 1
    # the router's labels stand; the step is the one the run waited in
    assert description.typed_search_attributes.get(search_attributes.STEP) == "pause"
    async with sqlite_store.session() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.workflow_id == wid))).scalars()
        assert [(r.step, r.status, r.channel) for r in rows] == [("hello", "sent", "email")]
