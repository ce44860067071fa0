"""Erasure with a run stuck on an activity that fails forever: the answer comes within 2 s, the
run is terminated, the data and the data key are gone, and the audit record names no one."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import select
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import journey_activities
from cairn.contracts import EVALUATE_CONDITION
from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey_run import workflow_id
from cairn.privacy.erasure import contact_hash
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import Contact, ErasureRecord, Event, RejectedCall
from starter.api.app import create_app
from starter.worker import running, workflow_runner
from tests.api_support import admin
from tests.engine_support import publish, terminate_leftovers
from workflows import WORKFLOWS

attempts: list[int] = []


@activity.defn(name=EVALUATE_CONDITION)
async def failing_condition(request: Any) -> Any:
    attempts.append(activity.info().attempt)
    raise ApplicationError("the condition service is down")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_erasure_with_a_stuck_run_answers_within_2s_and_ends_the_run(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    store, client = sqlite_store, temporal_env.client
    key, contact = unique("stuck"), unique("c")
    await publish(store, {
        "key": key, "name": "Stuck", "trigger": {"event": "signup"}, "start": "check",
        "steps": {"check": {"if": {"attribute": "plan", "eq": "pro"},
                            "then": "end", "else": "end"}}})
    queue = unique("journeys")
    real = [fn for fn in journey_activities(store)
            if activity._Definition.must_from_callable(fn).name != EVALUATE_CONDITION]
    worker = Worker(client, task_queue=queue, workflows=list(WORKFLOWS),
                    activities=[*real, failing_condition], workflow_runner=workflow_runner())
    router = Router(client, store, task_queue=queue, delivery_task_queue=f"{queue}-delivery")
    app = create_app(store, Ingest(store, router), settings=Settings(database_url=store.url),
                     temporal=client)
    wid = workflow_id(key, contact)
    try:
        async with running([worker]), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://cairn.test",
                auth=admin(store)) as api:
            assert (await api.post("/v1/track", json={
                "userId": contact, "event": "signup"})).status_code == 202
            for who in (contact, f"{contact}-other"):  # a batch item refused, kept as sent
                assert (await api.post("/v1/batch", json={"batch": [
                    {"type": "track", "userId": who, "event": 7}]})).status_code == 200
            for _ in range(200):
                if len(attempts) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(attempts) >= 2, "the activity keeps failing and being retried"

            started = time.monotonic()
            answer = await api.delete(f"/v1/contacts/{contact}")
            elapsed = time.monotonic() - started

            assert answer.status_code == 200, answer.text
            assert elapsed < 2.0, f"erasure took {elapsed:.2f}s"
            report = answer.json()
            # Asked to exit, it cannot while its activity is retried: terminated after the grace.
            assert report["journeys_terminated"] == [wid]
            assert report["journeys_ended"] == report["journeys_still_ending"] == []
            described = await client.get_workflow_handle(wid).describe()
            assert described.status == WorkflowExecutionStatus.TERMINATED
            assert report["erased"]["contacts"] == 1 and report["erased"]["events"] == 1
            async with store.session() as session:
                assert (await session.scalars(
                    select(Contact).where(Contact.id == contact))).first() is None
                assert (await session.scalars(
                    select(Event).where(Event.contact_id == contact))).first() is None
                (audit,) = (await session.scalars(select(ErasureRecord).where(
                    ErasureRecord.contact_hash == contact_hash(contact)))).all()
            assert audit.counts["events"] == 1
            assert report["erased"]["rejected_calls"] == 1
            async with store.session() as session:
                kept = (await session.scalars(select(RejectedCall))).all()
            assert [f"{contact}-other" in row.call for row in kept] == [True]
            assert (audit.runs_ended, audit.runs_terminated) == (0, 1)
            assert audit.erased_by is not None and audit.erased_by.startswith("test-admin")
            assert contact not in repr(vars(audit))
    finally:
        await terminate_leftovers(client, store)
