"""Broadcasts: a schedule's occurrence entering its batches together, on a time-skipping server
with the real workers and a SQLite store.

A journey whose only step is a send gets no run per contact: the batch checks, sends and closes
the entries, and the ledger row names the broadcast run. A contact whose send is held gets a run
of its own; a journey that goes on after its first step starts a run per contact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from cairn.store import entries as entries_repo
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryLink
from cairn.sweeps import SCHEDULED_ENTRY_WORKFLOW, ScheduleInput, SweepResult
from tests.engine.test_sweeps import add_contact, catalog, publish, worker
from tests.engine_support import unique

__all__ = ["catalog"]  # the fixture, shared with the sweeps' tests

NEWS = {"news": {"email": {"subject": "News for {{ contact.first_name }}",
                          "body": "Hello: https://news.example/june"}}}
OCCURRENCE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def broadcast(key: str, steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"key": key, "name": "Monthly news", "templates": NEWS,
            "trigger": {"schedule": {"cron": "0 9 1 * *", "segment": "readers"}},
            "steps": steps, **extra}


async def readers(store: Store, people: dict[str, dict[str, Any]]) -> None:
    seen = datetime.now(UTC)
    for contact, traits in people.items():
        await add_contact(store, contact, seen, traits)
    async with store.session() as session, session.begin():
        for contact in people:
            await segments_repo.enter_segment(session, contact, "readers", seen)


async def occurrence(env: WorkflowEnvironment, config: Any, key: str, wid: str,
                     when: datetime = OCCURRENCE) -> SweepResult:
    data = ScheduleInput(config=config, journey=key, segment="readers", occurrence=when)
    result: SweepResult = await env.client.execute_workflow(
        SCHEDULED_ENTRY_WORKFLOW, data, id=wid, task_queue=config.journey_task_queue,
        result_type=SweepResult)
    return result


async def ledger(store: Store, journey_key: str) -> dict[str, Delivery]:
    async with store.session() as session:
        rows = await session.scalars(select(Delivery).where(Delivery.journey_key == journey_key))
        return {row.contact_id or "": row for row in rows}


async def run_status(env: WorkflowEnvironment, wid: str) -> WorkflowExecutionStatus | None:
    try:
        return (await env.client.get_workflow_handle(wid).describe()).status
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return None


SUBSCRIBED = {"email": "a@example.com", "first_name": "Ana", "consent": {"marketing": True}}


async def test_a_send_only_broadcast_sends_once_per_contact_without_runs(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    key = unique("news")
    await publish(sqlite_store, broadcast(key, {
        "mail": {"send": {"channel": "email", "template": "news"}, "next": "end"}}))
    await readers(sqlite_store, {
        "r-1": SUBSCRIBED, "r-2": {**SUBSCRIBED, "email": "b@example.com"},
        "r-3": {"email": "c@example.com"},  # no marketing consent
        "r-4": {"consent": {"marketing": True}},  # no address
    })
    wid = unique("broadcast")
    async with worker(temporal_env, sqlite_store, catalog, batch_size=2) as config:
        first = await occurrence(temporal_env, config, key, wid)
        again = await occurrence(temporal_env, config, key, unique("broadcast"))

    assert (first.contacts, first.batches, first.emitted) == (4, 2, 4)
    assert (again.contacts, again.emitted) == (4, 0)
    sent = await ledger(sqlite_store, key)
    assert {c: row.status for c, row in sent.items()} == {
        "r-1": "sent", "r-2": "sent", "r-3": "skipped:consent", "r-4": "skipped:unreachable"}
    assert {row.workflow_id for row in sent.values()} == {wid}  # the broadcast acted
    assert sent["r-1"].idempotency_key == f"{wid}/r-1/mail/1"
    assert sent["r-1"].rendered["subject"] == "News for Ana"
    # the link is tracked as in a run's send (cairn.links)
    async with sqlite_store.session() as session:
        [link] = await session.scalars(select(DeliveryLink).where(
            DeliveryLink.delivery_id == sent["r-1"].id))
    assert (link.url, link.contact_id) == ("https://news.example/june", "r-1")
    assert sent["r-1"].rendered["body"].startswith("Hello: http://127.0.0.1:8000/l/")
    assert "List-Unsubscribe" in (sent["r-1"].response or {}).get("headers", {})
    async with sqlite_store.session() as session:
        entries = await entries_repo.entries_for(session, key)
    assert sorted(e.contact_id for e in entries) == ["r-1", "r-2", "r-3", "r-4"]
    assert {(e.workflow_id, e.outcome) for e in entries} == {(wid, "completed")}
    assert all(e.ended_at is not None for e in entries)
    for contact in ("r-1", "r-3"):
        assert await run_status(temporal_env, f"journey/{key}/{contact}") is None


async def test_a_held_send_gets_a_run_of_its_own(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    key = unique("night")
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).strftime("%H:00")
    end = (now + timedelta(hours=2)).strftime("%H:00")
    await publish(sqlite_store, broadcast(key, {
        "mail": {"send": {"channel": "email", "template": "news"}, "next": "end"}},
        settings={"quiet_hours": {"from": start, "to": end}, "timezone": "UTC"}))
    await readers(sqlite_store, {
        "q-1": {**SUBSCRIBED, "timezone": "UTC"},
        "q-2": {**SUBSCRIBED, "timezone": "UTC"},
    })
    wid = unique("broadcast")
    async with worker(temporal_env, sqlite_store, catalog) as config:
        await occurrence(temporal_env, config, key, wid)
        async with sqlite_store.session() as session:
            entries = await entries_repo.entries_for(session, key)
        statuses = {e.contact_id: await run_status(temporal_env, e.workflow_id)
                    for e in entries}

    assert {e.contact_id: e.workflow_id for e in entries} == {
        "q-1": f"journey/{key}/q-1", "q-2": f"journey/{key}/q-2"}
    assert set(statuses.values()) <= {WorkflowExecutionStatus.RUNNING,
                                      WorkflowExecutionStatus.COMPLETED}
    assert all(status is not None for status in statuses.values())
    assert not {c: r for c, r in (await ledger(sqlite_store, key)).items()
                if r.workflow_id == wid}  # the broadcast sent nothing it had to hold


async def test_a_journey_that_goes_on_starts_a_run_per_contact_once(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, catalog: Path
) -> None:
    key = unique("drip")
    await publish(sqlite_store, broadcast(key, {
        "pause": {"wait": "30d", "next": "mail"},
        "mail": {"send": {"channel": "email", "template": "news"}, "next": "end"}},
        entry={"reentry": "never"}))
    await readers(sqlite_store, {f"w-{i}": SUBSCRIBED for i in range(5)})
    async with worker(temporal_env, sqlite_store, catalog, batch_size=2) as config:
        first = await occurrence(temporal_env, config, key, unique("broadcast"))
        statuses = [await run_status(temporal_env, f"journey/{key}/w-{i}") for i in range(5)]
        later = await occurrence(temporal_env, config, key, unique("broadcast"),
                                 OCCURRENCE + timedelta(days=30))
        async with sqlite_store.session() as session:
            entries = await entries_repo.entries_for(session, key)

    assert (first.contacts, first.batches) == (5, 3)
    assert all(status is not None for status in statuses)
    assert later.emitted == 5
    # reentry: never refuses the next occurrence for everyone: one entry each, in its own run
    assert sorted((e.contact_id, e.workflow_id) for e in entries) == [
        (f"w-{i}", f"journey/{key}/w-{i}") for i in range(5)]


@pytest.mark.parametrize("size", [1, 3])
async def test_bounds_cover_every_member_once(sqlite_store: Store, size: int) -> None:
    from cairn.store import sweeps as sweeps_repo

    await readers(sqlite_store, {f"b-{i}": {} for i in range(7)})
    async with sqlite_store.session() as session:
        bounds = await sweeps_repo.scheduled_bounds(session, "readers", size)
        edges: list[str | None] = [None, *bounds, None]
        batches = [await sweeps_repo.scheduled_contact_ids(session, "readers", edges[i], None,
                                                           edges[i + 1])
                   for i in range(len(edges) - 1)]
    assert [c for batch in batches for c in batch] == [f"b-{i}" for i in range(7)]
    assert all(len(batch) == size for batch in batches[:-1])
