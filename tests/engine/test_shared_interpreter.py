"""Production workers share the interpreter's modules between runs (`share_workflow_code`);
runs on such a worker still keep to themselves and end as they do in the strict sandbox."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from temporalio.testing import WorkflowEnvironment

from cairn.contact import ContactSnapshot
from cairn.journey import Journey
from cairn.journey_run import EVENT_SIGNAL, EventMessage, JourneyInput, JourneyResult, workflow_id
from cairn.settings import Settings
from cairn.store import contacts
from cairn.store.db import Store
from starter.worker import (
    SHARED_WORKFLOW_MODULES,
    journey_workers,
    running,
    workflow_runner,
)

JOURNEY = {
    "key": "shared-code", "name": "Shared code", "trigger": {"event": "go"},
    "steps": {
        "pause": {"wait": "2h", "next": "mark"},
        "mark": {"score": {"add": 1, "dimension": "shared"}, "next": "again"},
        "again": {"wait": "1d", "next": "end"},
    },
}


def test_only_production_workers_pass_the_interpreter_through() -> None:
    shared = workflow_runner(share_workflow_code=True).restrictions.passthrough_modules
    strict = workflow_runner().restrictions.passthrough_modules

    assert set(SHARED_WORKFLOW_MODULES) <= shared
    assert not set(SHARED_WORKFLOW_MODULES) & strict
    assert Settings().worker_strict_sandbox is False


async def test_runs_on_shared_code_keep_their_own_state(
    temporal_env: WorkflowEnvironment, db_url: str
) -> None:
    store = await Store.open(db_url)
    queue = f"shared-{uuid.uuid4().hex[:8]}-journeys"
    journey = Journey.model_validate(JOURNEY)
    workers = journey_workers(temporal_env.client, store, journey_queue=queue,
                              delivery_queue=queue.replace("journeys", "delivery"),
                              share_workflow_code=True, cached_runs=2)
    try:
        async with running(workers):
            handles = []
            for n in range(4):
                contact = f"c-{uuid.uuid4().hex[:8]}"
                async with store.session() as session, session.begin():
                    await contacts.create_contact(
                        session, ContactSnapshot(id=contact, timezone="UTC"), datetime.now(UTC))
                trigger = EventMessage(message_id=f"go-{contact}", event="go",
                                       contact_id=contact, timestamp=datetime.now(UTC))
                handles.append(await temporal_env.client.start_workflow(
                    "JourneyWorkflow",
                    JourneyInput(journey=journey, contact_id=contact, trigger=trigger),
                    id=workflow_id(journey.key, contact) + f"/{n}", task_queue=queue,
                    start_signal=EVENT_SIGNAL, start_signal_args=[trigger],
                    result_type=JourneyResult))
            results = await asyncio.gather(*(handle.result() for handle in handles))
    finally:
        await store.close()

    # Four runs through a cache of two: each evicted and rebuilt from its history at least once.
    for result in results:
        assert result.outcome == "completed"
        assert [entry.step for entry in result.path] == ["pause", "mark", "again"]
