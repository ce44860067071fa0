"""Helpers of the tests that run journeys on workers: router, relay, sweeps and triggers.

The fixtures (`temporal_env`, one per test module, and the `store`) come from tests/conftest.py;
this module holds what is not a fixture: the engine (workers + router) and small journey helpers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from cairn.events.router import Router
from cairn.journey import Journey
from cairn.journey_run import JourneyResult
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Entry, Event
from starter.worker import journey_workers, running

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

MARK_AND_END = {"mark": {"score": {"add": 1, "dimension": "entered"}, "next": "end"}}
"""A journey body that finishes at once, leaving a score change as proof it ran."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def engine(env: WorkflowEnvironment, store: Store) -> AsyncIterator[Router]:
    """Workers on queues of this test only, and a router starting runs on them; runs still
    going at the end are terminated."""
    queue = unique("journeys")
    workers = journey_workers(env.client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery")
    async with running(workers):
        try:
            yield Router(env.client, store, task_queue=queue,
                         delivery_task_queue=f"{queue}-delivery")
        finally:
            await terminate_leftovers(env.client, store)


async def terminate_leftovers(client: Client, store: Store) -> None:
    async with store.session() as session:
        wids = dict.fromkeys(row.workflow_id for row in await entries_repo.entries_for(session))
    for wid in wids:
        handle = client.get_workflow_handle(wid)
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate(reason="test over")
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise


async def publish(store: Store, definition: dict[str, Any]) -> Journey:
    journey = Journey.model_validate(definition)
    async with store.session() as session, session.begin():
        row, _ = await journeys_repo.publish(session, journey, source=None, now=T0)
    return journeys_repo.journey_of(row)


async def entries_of(store: Store, journey_key: str) -> list[Entry]:
    async with store.session() as session:
        return list(await entries_repo.entries_for(session, journey_key))


async def finished(env: WorkflowEnvironment, wid: str) -> JourneyResult:
    handle = env.client.get_workflow_handle(wid, result_type=JourneyResult)
    result: JourneyResult = await handle.result()
    return result


async def events_named(store: Store, name: str, contact: str | None = None) -> list[Event]:
    async with store.session() as session:
        query = select(Event).where(Event.name == name).order_by(Event.id)
        if contact is not None:
            query = query.where(Event.contact_id == contact)
        return list(await session.scalars(query))
