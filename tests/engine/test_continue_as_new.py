"""Continue-as-new in the middle of a wait: the run hands its state to a new run, which resumes
the same wait with the same deadline and still hears the event it waits for.

Temporal suggests continue-as-new only after thousands of history events; `history_limit` in the
input makes a run continue as new after a few dozen, so the path is exercised for real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from cairn.contact import ContactSnapshot
from cairn.journey import Journey
from cairn.journey_run import (
    EVENT_SIGNAL,
    STATE_QUERY,
    EventMessage,
    JourneyInput,
    JourneyResult,
    JourneyStateView,
    workflow_id,
)
from cairn.store import contacts
from cairn.store.db import Store
from starter.worker import journey_workers, running

JOURNEY = {
    "key": "invoice-wait", "name": "Invoice wait", "trigger": {"event": "invoice_sent"},
    "start": "wait_paid",
    "steps": {
        "wait_paid": {"wait_for_event": {"event": "invoice_paid", "timeout": "30d"},
                      "then": "thanks", "timeout_next": "chase"},
        "thanks": {"score": {"add": 1, "dimension": "paid"}, "next": "end"},
        "chase": {"score": {"add": 1, "dimension": "chased"}, "next": "end"},
    },
}


@pytest_asyncio.fixture
async def engine(temporal_env: WorkflowEnvironment,
                 db_url: str) -> AsyncIterator[tuple[Client, Store, str]]:
    store = await Store.open(db_url)
    queue = f"can-{uuid.uuid4().hex[:8]}-journeys"
    workers = journey_workers(temporal_env.client, store, journey_queue=queue,
                              delivery_queue=queue.replace("journeys", "delivery"))
    try:
        async with running(workers):
            yield temporal_env.client, store, queue
    finally:
        await store.close()


def message(name: str, contact: str, n: int = 0) -> EventMessage:
    return EventMessage(message_id=f"{name}-{contact}-{n}", event=name, contact_id=contact,
                        properties={"n": n}, timestamp=datetime.now(UTC))


async def start(client: Client, store: Store, queue: str) -> tuple[WorkflowHandle, str]:
    contact = f"c-{uuid.uuid4().hex[:8]}"
    async with store.session() as session, session.begin():
        await contacts.create_contact(session, ContactSnapshot(id=contact, timezone="UTC"),
                                      datetime.now(UTC))
    journey = Journey.model_validate(JOURNEY)
    trigger = message("invoice_sent", contact)
    handle = await client.start_workflow(
        "JourneyWorkflow",
        JourneyInput(journey=journey, contact_id=contact, trigger=trigger, history_limit=30),
        id=workflow_id(journey.key, contact), task_queue=queue,
        start_signal=EVENT_SIGNAL, start_signal_args=[trigger], result_type=JourneyResult,
    )
    return handle, contact


async def view_of(client: Client, workflow_id: str) -> JourneyStateView:
    handle = client.get_workflow_handle(workflow_id)  # the latest run of the id
    result: JourneyStateView = await handle.query(STATE_QUERY, result_type=JourneyStateView)
    return result


async def new_run_waiting(client: Client, workflow_id: str, first_run_id: str) -> str:
    """The id of the run that continued the first, once it has started its timer again.

    Polls `describe` and the history rather than the state query: a query sent while one run
    hands over to the next can time out on the test server and leave it unable to answer
    `result()` afterwards.
    """
    for _ in range(400):
        described = await client.get_workflow_handle(workflow_id).describe()
        if described.run_id and described.run_id != first_run_id:
            history = await client.get_workflow_handle(
                workflow_id, run_id=described.run_id).fetch_history()
            if any(e.HasField("timer_started_event_attributes") for e in history.events):
                return described.run_id
        await asyncio.sleep(0.05)
    raise AssertionError("the run never continued as new")


async def closed(client: Client, workflow_id: str) -> JourneyResult:
    """The journey's result once its latest run has completed (polled, without long polls)."""
    for _ in range(400):
        handle = client.get_workflow_handle(workflow_id, result_type=JourneyResult)
        described = await handle.describe()
        if described.status == WorkflowExecutionStatus.COMPLETED:
            result: JourneyResult = await handle.result()
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("the journey never completed")


async def test_a_wait_survives_continue_as_new_and_hears_its_event(
    engine: tuple[Client, Store, str],
) -> None:
    client, store, queue = engine
    handle, contact = await start(client, store, queue)
    first_run = (await handle.describe()).run_id
    assert first_run is not None
    first = await view_of(client, handle.id)
    assert first.current_step == "wait_paid" and first.until is not None
    # Unrelated events fill the history: each signal is a workflow task or more.
    latest = client.get_workflow_handle(handle.id)
    for n in range(12):
        await latest.signal(EVENT_SIGNAL, message("page_viewed", contact, n))
    await new_run_waiting(client, handle.id, first_run)
    moved = await view_of(client, handle.id)
    assert moved.runs >= 2 and moved.current_step == "wait_paid"
    assert moved.until == first.until  # the same wait, the same end: not restarted
    assert [p.step for p in moved.path] == ["wait_paid"]  # one visit, resumed
    await latest.signal(EVENT_SIGNAL, message("invoice_paid", contact))
    result = await closed(client, handle.id)
    assert result.outcome == "completed"
    assert [p.step for p in result.path] == ["wait_paid", "thanks"]
    async with store.session() as session:
        assert await contacts.snapshot(session, contact) is not None
