"""A poison event: retried with backoff, quarantined with its error, never holding back the rest.

The issue's poison is an event dated 0001-01-01 that makes the profile-rules hook raise
`OverflowError` on every pass. The door refuses such input now, so the poison is written straight
into the store and a hook raises for it, as the real one did. Other contacts' events route at
once; the poisoned contact's later event waits until the poison is quarantined; the quarantine is
listed (API and CLI) and re-driven after the fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import Prepared, ProfileRules
from cairn.events.relay import EventRelay
from cairn.events.router import Router
from cairn.journey_run import EventMessage, workflow_id
from cairn.scoring import Scoring
from cairn.settings import Settings, get_settings
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Event
from starter.api.app import create_app
from starter.cli.main import app as cli_app
from starter.worker import journey_workers, running
from tests.api_support import admin
from tests.engine_support import T0, terminate_leftovers, unique
from tests.events.test_relay import publish_waiting_journey

POISON_TIME = datetime(1, 1, 1, tzinfo=UTC)


class OverflowingRules(ProfileRules):
    """The profile-rules hook as it failed in the issue: an event dated year 1 overflows."""

    async def apply(self, event: EventMessage, prepared: Prepared | None = None) -> list[int]:
        if event.timestamp.year == 1:
            raise OverflowError("date value out of range")
        return await super().apply(event, prepared)


@asynccontextmanager
async def poisoned_engine(env: WorkflowEnvironment, store: Store,
                          attempts: int) -> AsyncIterator[Ingest]:
    queue = unique("journeys")
    workers = journey_workers(env.client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery")
    async with running(workers):
        try:
            yield Ingest(store, Router(env.client, store, task_queue=queue,
                                       delivery_task_queue=f"{queue}-delivery"),
                         profile_rules=OverflowingRules(store, [], Scoring(files=[])),
                         routing_backoff=timedelta(0), max_routing_attempts=attempts)
        finally:
            await terminate_leftovers(env.client, store)


async def row_of(store: Store, event_id: int) -> Event:
    async with store.session() as session:
        row = await session.scalar(select(Event).where(Event.id == event_id)
                                   .execution_options(populate_existing=True))
    assert row is not None
    return row


async def running_run(env: WorkflowEnvironment, wid: str) -> bool:
    try:
        described = await env.client.get_workflow_handle(wid).describe()
    except RPCError:
        return False
    return described.status == WorkflowExecutionStatus.RUNNING


async def test_a_poison_event_is_quarantined_and_holds_back_only_its_contacts_later_events(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    key, poisoned, other = unique("poison"), unique("c"), unique("c")
    await publish_waiting_journey(store, key)
    async with poisoned_engine(temporal_env, store, attempts=3) as ingest:
        async with store.session() as session, session.begin():
            poison, _ = await events_repo.record_event(
                session, message_id=unique("m-poison"), type="track", contact_id=poisoned,
                name="cart_item_added", properties={}, timestamp=POISON_TIME,
                received_at=T0)
        later = await ingest.track(TrackCall(user_id=poisoned, event="cart_item_added",
                                             timestamp=T0), route=False)
        beside = await ingest.track(TrackCall(user_id=other, event="cart_item_added",
                                              timestamp=T0), route=False)
        relay = EventRelay(ingest, store, grace=timedelta(0))

        # First pass: the other contact's event routes; the poison fails its first attempt and
        # its contact's later event waits behind it.
        assert await relay.pass_once() == 1
        assert (await row_of(store, beside.event_id)).routed_at is not None
        assert await running_run(temporal_env, workflow_id(key, other))
        failing = await row_of(store, poison.id)
        assert failing.routing_attempts == 1 and failing.quarantined_at is None
        assert failing.routing_error is not None and "OverflowError" in failing.routing_error
        assert (await row_of(store, later.event_id)).routed_at is None
        assert not await running_run(temporal_env, workflow_id(key, poisoned))

        # Second attempt fails too; the third quarantines it and the later event goes through.
        assert await relay.pass_once() == 0
        assert await relay.pass_once() == 1
        quarantined = await row_of(store, poison.id)
        assert quarantined.quarantined_at is not None and quarantined.routing_attempts == 3
        assert quarantined.routed_at is None
        assert (await row_of(store, later.event_id)).routed_at is not None
        assert await running_run(temporal_env, workflow_id(key, poisoned))
        assert await relay.pass_once() == 0, "a quarantined event is not tried again"

        # Listed by the API and the CLI.
        app = create_app(store, ingest, settings=Settings(database_url=store.url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test",
                                     auth=admin(app.state.store)) as api:
            listed = await api.get("/v1/quarantine")
            assert listed.status_code == 200, listed.text
            [shown] = listed.json()
            assert shown["id"] == poison.id and shown["contact_id"] == poisoned
            assert shown["attempts"] == 3 and "OverflowError" in shown["error"]
            assert (await api.post("/v1/quarantine/999999/retry")).status_code == 404
            assert (await api.post(f"/v1/quarantine/{beside.event_id}/retry")).status_code == 404

            output = await cli(monkeypatch, store, ["quarantine"])
            assert str(poison.id) in output and "OverflowError" in output

            # The fix (here: the date corrected in the store), then the re-drive.
            async with store.session() as session, session.begin():
                await session.execute(update(Event).where(Event.id == poison.id)
                                      .values(timestamp=T0 - timedelta(minutes=1)))
            retried = await api.post(f"/v1/quarantine/{poison.id}/retry")
            assert retried.status_code == 200, retried.text
            assert retried.json() == {"released": [poison.id]}
            assert await relay.pass_once() == 1
            assert (await row_of(store, poison.id)).routed_at is not None
            assert (await api.get("/v1/quarantine")).json() == []


async def test_cli_retry_all_puts_every_quarantined_event_back_in_line(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = Ingest(store, None,
                    profile_rules=OverflowingRules(store, [], Scoring(files=[])),
                    routing_backoff=timedelta(0), max_routing_attempts=1)
    ids = []
    for _ in range(2):
        async with store.session() as session, session.begin():
            row, _ = await events_repo.record_event(
                session, message_id=unique("m-poison"), type="track", contact_id=unique("c"),
                name="signup", properties={}, timestamp=POISON_TIME, received_at=T0)
        ids.append(row.id)
    assert await ingest.route_events(ids) == {}
    for event_id in ids:
        assert (await row_of(store, event_id)).quarantined_at is not None

    missing = await cli(monkeypatch, store, ["quarantine", "--retry", "999999"], code=1)
    assert "no quarantined event 999999" in missing
    released = await cli(monkeypatch, store, ["quarantine", "--all"])
    assert "released 2 event(s)" in released
    for event_id in ids:
        row = await row_of(store, event_id)
        assert row.quarantined_at is None and row.routing_attempts == 0
    assert "no quarantined events" in await cli(monkeypatch, store, ["quarantine"])


async def cli(monkeypatch: pytest.MonkeyPatch, store: Store, args: list[str],
              code: int = 0) -> str:
    monkeypatch.setenv("CAIRN_DATABASE_URL", store.url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        result: Any = await asyncio.to_thread(CliRunner().invoke, cli_app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == code, result.output
    return str(result.output)
