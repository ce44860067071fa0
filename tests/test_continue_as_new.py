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
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
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


async def view_of(handle: WorkflowHandle) -> JourneyStateView:
    # The latest run of the id: the first one has continued as new.
    latest = handle._client.get_workflow_handle(handle.id)
    result: JourneyStateView = await latest.query(STATE_QUERY, result_type=JourneyStateView)
    return result


async def settle(handle: WorkflowHandle, check: object) -> JourneyStateView:
    """Poll the state query; a query that lands while one run hands over to the next may time
    out on the test server, so such an answer is simply asked again."""
    view: JourneyStateView | None = None
    for _ in range(100):
        try:
            view = await asyncio.wait_for(view_of(handle), timeout=5)
        except (RPCError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        if check(view):  # type: ignore[operator]
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"state never settled: {view}")


async def test_a_wait_survives_continue_as_new_and_hears_its_event(
    engine: tuple[Client, Store, str],
) -> None:
    client, store, queue = engine
    handle, contact = await start(client, store, queue)
    first = await settle(handle, lambda v: v.current_step == "wait_paid" and v.until)
    deadline = first.until
    # Unrelated events fill the history: each signal is a workflow task or more.
    for n in range(12):
        await handle.signal(EVENT_SIGNAL, message("page_viewed", contact, n))
    moved = await settle(handle, lambda v: v.runs >= 2)
    assert moved.current_step == "wait_paid"
    assert moved.until == deadline  # the same wait, the same end: not restarted
    assert [p.step for p in moved.path] == ["wait_paid"]  # one visit, resumed
    await handle.signal(EVENT_SIGNAL, message("invoice_paid", contact))
    result = await handle.result()
    assert result.outcome == "completed"
    assert [p.step for p in result.path] == ["wait_paid", "thanks"]
    async with store.session() as session:
        assert await contacts.snapshot(session, contact) is not None
