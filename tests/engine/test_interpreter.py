"""The interpreter's own promises, seen from Temporal: signals, the state query, exits, labels.

These start the workflow directly (not through the router) to reach what the router shields it
from: duplicate deliveries of one event, and operator exits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from cairn import search_attributes
from cairn.contact import ContactSnapshot
from cairn.journey import Journey
from cairn.journey_run import (
    EVENT_SIGNAL,
    EXIT_SIGNAL,
    STATE_QUERY,
    EventMessage,
    ExitRequest,
    JourneyInput,
    JourneyResult,
    JourneyStateView,
    workflow_id,
)
from cairn.store import contacts, scores
from cairn.store.db import Store
from starter.worker import journey_workers, running

PING_LOOP = {
    "key": "ping-loop",
    "name": "Count pings",
    "trigger": {"event": "go"},
    "exit": [{"event": "paid", "where": {"properties.amount": {"gt": 0}}, "goal": "converted"}],
    "steps": {
        "listen": {
            "wait_for_event": {"event": "ping", "timeout": "7d"},
            "then": "count",
            "timeout_next": "end",
            "summary": "wait up to 7d for a ping",
        },
        "count": {"score": {"add": 1}, "next": "listen"},
    },
}


@pytest_asyncio.fixture
async def engine(
    temporal_env: WorkflowEnvironment, db_url: str
) -> AsyncIterator[tuple[Client, Store, str]]:
    store = await Store.open(db_url)
    queue = f"interp-{uuid.uuid4().hex[:8]}-journeys"
    workers = journey_workers(
        temporal_env.client, store, journey_queue=queue,
        delivery_queue=queue.replace("journeys", "delivery"),
    )
    async with running(workers):
        yield temporal_env.client, store, queue
    await store.close()


def event(name: str, message_id: str, contact: str, **properties: object) -> EventMessage:
    return EventMessage(
        message_id=message_id, event=name, contact_id=contact, properties=properties,
        timestamp=datetime.now(UTC),
    )


async def start(client: Client, store: Store, queue: str) -> tuple[WorkflowHandle, str]:
    contact = f"c-{uuid.uuid4().hex[:8]}"
    async with store.session() as session, session.begin():
        await contacts.create_contact(
            session, ContactSnapshot(id=contact, timezone="UTC"), datetime.now(UTC)
        )
    journey = Journey.model_validate({**PING_LOOP, "version": 3})
    trigger = event("go", f"go-{contact}", contact)
    handle = await client.start_workflow(
        "JourneyWorkflow",
        JourneyInput(journey=journey, contact_id=contact, trigger=trigger),
        id=workflow_id(journey.key, contact),
        task_queue=queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[trigger],
        result_type=JourneyResult,
    )
    return handle, contact


async def state(handle: WorkflowHandle) -> JourneyStateView:
    view: JourneyStateView = await handle.query(STATE_QUERY, result_type=JourneyStateView)
    return view


async def settle(handle: WorkflowHandle, until: object) -> JourneyStateView:
    """Poll the state query until a condition holds (the worker runs in this process)."""
    import asyncio

    for _ in range(100):
        view = await state(handle)
        if until(view):  # type: ignore[operator]
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"state never reached the expected shape: {view}")


async def test_a_repeated_message_id_is_heard_once(engine: tuple[Client, Store, str]) -> None:
    client, store, queue = engine
    handle, contact = await start(client, store, queue)
    await settle(handle, lambda v: v.current_step == "listen")
    ping = event("ping", "ping-1", contact)
    await handle.signal(EVENT_SIGNAL, ping)
    await handle.signal(EVENT_SIGNAL, ping)  # the same delivery, retried by a sender
    # The loop is back in `listen` (a new run, after continue-as-new) before the next ping:
    # a wait only hears events that arrive after it began.
    await settle(handle, lambda v: v.runs == 2 and v.until is not None)
    await handle.signal(EVENT_SIGNAL, ping)  # a late duplicate, after continue-as-new
    await handle.signal(EVENT_SIGNAL, event("ping", "ping-2", contact))
    await settle(handle, lambda v: [p.step for p in v.path].count("count") == 2)
    await handle.signal(EVENT_SIGNAL, event("paid", "pay-1", contact, amount=10))
    result = await handle.result()
    assert result.outcome == "converted"
    assert [p.step for p in result.path].count("count") == 2
    async with store.session() as session:
        assert (await scores.scores_of(session, contact)) == {"global": 2}


async def test_state_query_names_the_wait_and_its_deadline(
    engine: tuple[Client, Store, str],
) -> None:
    client, store, queue = engine
    handle, _ = await start(client, store, queue)
    view = await settle(handle, lambda v: v.until is not None)
    assert view.journey == "ping-loop"
    assert view.version == 3
    assert view.current_step == "listen"
    assert view.waiting_for == "wait up to 7d for a ping"
    assert view.outcome is None
    assert view.until is not None
    assert timedelta(days=6, hours=23) < view.until - view.path[0].at <= timedelta(days=7)
    await handle.signal(EXIT_SIGNAL, ExitRequest(reason="support ticket 42"))
    result = await handle.result()
    assert result.outcome == "removed"
    assert "support ticket 42" in result.path[-1].note


async def test_goal_filter_must_hold(engine: tuple[Client, Store, str]) -> None:
    client, store, queue = engine
    handle, contact = await start(client, store, queue)
    await settle(handle, lambda v: v.current_step == "listen")
    await handle.signal(EVENT_SIGNAL, event("paid", "pay-0", contact, amount=0))
    view = await state(handle)
    assert view.outcome is None
    await handle.signal(EXIT_SIGNAL, ExitRequest())
    assert (await handle.result()).outcome == "removed"


async def test_runs_are_labelled_for_operators(engine: tuple[Client, Store, str]) -> None:
    client, store, queue = engine
    handle, contact = await start(client, store, queue)
    await settle(handle, lambda v: v.current_step == "listen")
    described = await handle.describe()
    labels = described.typed_search_attributes
    assert labels.get(search_attributes.JOURNEY) == "ping-loop"
    assert labels.get(search_attributes.CONTACT) == contact
    assert labels.get(search_attributes.VERSION) == 3
    assert labels.get(search_attributes.STEP) == "listen"
    await handle.signal(EXIT_SIGNAL, ExitRequest())
    await handle.result()
