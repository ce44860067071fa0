"""Durable routing: an accepted event reaches its journey even if the API dies before routing it.

A real API process (uvicorn, real HTTP on loopback) stores the event and is killed with SIGKILL
before it can route it; the relay, run against a time-skipping Temporal server with real workers,
then starts the journey. Routing the same event again does not start a second entry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.relay import EventRelay, relaying
from cairn.events.router import Router
from cairn.journey import Journey
from cairn.journey_run import workflow_id
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Event
from starter.dev import free_port
from starter.worker import journey_workers, running
from tests.api_support import bearer, new_key
from tests.engine_support import T0, terminate_leftovers, unique

DEADLINE = 60.0

API_PROCESS = """\
import asyncio, sys

import uvicorn
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from cairn.events.ingest import Ingest
from cairn.events.router import Router


async def main(db_url: str, temporal_address: str, port: int) -> None:
    store = await Store.open(db_url)
    # Lazy: the address has no server, so every routing attempt fails and events stay unrouted.
    client = await Client.connect(temporal_address, lazy=True,
                                  data_converter=pydantic_data_converter)
    app = create_app(store, Ingest(store, Router(client, store)),
                     settings=Settings(database_url=db_url))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    await uvicorn.Server(config).serve()


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@asynccontextmanager
async def engine(env: WorkflowEnvironment, store: Store) -> AsyncIterator[Ingest]:
    """Workers on this test's own queues, and an Ingest whose router starts runs on them."""
    queue = unique("journeys")
    workers = journey_workers(env.client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery")
    async with running(workers):
        try:
            yield Ingest(store, Router(env.client, store, task_queue=queue,
                                       delivery_task_queue=f"{queue}-delivery"))
        finally:
            await terminate_leftovers(env.client, store)


async def publish_waiting_journey(store: Store, key: str) -> None:
    """A journey that starts on `cart_item_added` and waits a day (so its run stays open)."""
    journey = Journey.model_validate({
        "key": key, "name": "Cart reminder", "trigger": {"event": "cart_item_added"},
        "steps": {"pause": {"wait": "1d", "next": "end"}},
    })
    async with store.session() as session, session.begin():
        await journeys_repo.publish(session, journey, source=None, now=T0)


async def stored_event(store: Store, message_id: str) -> Event | None:
    async with store.session() as session:
        row: Event | None = await session.scalar(
            select(Event).where(Event.message_id == message_id))
        return row


async def eventually(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"after {DEADLINE:.0f}s still no {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def api_process(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[str, int]]:
    """The API in a process of its own, routing into a Temporal address where nothing listens."""
    script = tmp_path / "api_process.py"
    script.write_text(API_PROCESS)
    port, dead_temporal = free_port(), free_port()
    log_file = (tmp_path / "api_process.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script), db_url, f"127.0.0.1:{dead_temporal}", str(port)],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2],
    )
    try:
        url = f"http://127.0.0.1:{port}"

        async def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the API process exited with {process.returncode}: "
                            f"{(tmp_path / 'api_process.log').read_text()}")
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{url}/v1/health")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, "answer from the API process")
        yield url, process.pid
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log_file.close()


async def test_an_event_accepted_by_an_api_killed_before_routing_still_starts_its_journey(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, db_url: str, tmp_path: Path
) -> None:
    key, contact = unique("durable"), unique("c")
    await publish_waiting_journey(sqlite_store, key)

    write_key = await new_key(sqlite_store, "write")
    async with api_process(tmp_path, db_url) as (url, pid):
        async with httpx.AsyncClient(headers=bearer(write_key)) as http:
            answer = await http.post(f"{url}/v1/track", json={
                "userId": contact, "event": "cart_item_added", "messageId": "m-durable",
                "properties": {"value": 30}, "timestamp": "2026-03-02T09:00:00Z"})
        accepted = time.monotonic()
        assert answer.status_code == 202
        stored = await stored_event(sqlite_store, "m-durable")
        assert stored is not None and stored.routed_at is None
        os.kill(pid, signal.SIGKILL)

    row = await stored_event(sqlite_store, "m-durable")
    assert row is not None and row.routed_at is None, "the killed API must not have routed it"
    wid = workflow_id(key, contact)

    async with engine(temporal_env, sqlite_store) as ingest:
        # The relay as `cairn api` runs it (default interval and grace), even if the dead API
        # held a claim on the event when it died: the journey is reached within 5 s.
        async with relaying(EventRelay(ingest, sqlite_store)):
            async def routed() -> bool:
                found = await stored_event(sqlite_store, "m-durable")
                return found is not None and found.routed_at is not None

            await eventually(routed, "routing by the relay")
        assert time.monotonic() - accepted < 5.0, "the relay took longer than its 5 s promise"
        relay = EventRelay(ingest, sqlite_store, grace=timedelta(0))

        handle = temporal_env.client.get_workflow_handle(wid)
        first = await handle.describe()
        assert first.status == WorkflowExecutionStatus.RUNNING
        routed = await stored_event(sqlite_store, "m-durable")
        assert routed is not None and routed.routed_at is not None
        assert await relay.pass_once() == 0  # nothing left to route

        # A crash after routing but before `routed_at` was written: the relay routes it again.
        async with sqlite_store.session() as session, session.begin():
            await session.execute(update(Event).where(Event.id == row.id).values(routed_at=None))
        assert await relay.pass_once() == 1

        again = await handle.describe()
        assert again.run_id == first.run_id, "routing again must not start a second run"
        assert again.status == WorkflowExecutionStatus.RUNNING
        async with sqlite_store.session() as session:
            entries = await entries_repo.entries_for(session, key, contact)
        assert [(e.workflow_id, e.trigger_message_id) for e in entries] == [(wid, "m-durable")]


async def test_relay_in_the_background_routes_what_was_left(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    key, contact = unique("background"), unique("c")
    await publish_waiting_journey(sqlite_store, key)
    async with engine(temporal_env, sqlite_store) as ingest:
        left = await ingest.track(TrackCall(user_id=contact, event="cart_item_added",
                                            timestamp=T0), route=False)
        assert not left.routed

        relay = EventRelay(ingest, sqlite_store, interval=timedelta(milliseconds=50),
                           grace=timedelta(0))
        async with relaying(relay):
            async def routed() -> bool:
                row = await stored_event(sqlite_store, left.message_id)
                return row is not None and row.routed_at is not None

            await eventually(routed, "routing by the background relay")

        described = await temporal_env.client.get_workflow_handle(
            workflow_id(key, contact)).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING


async def test_relay_leaves_events_younger_than_its_grace_to_the_api(sqlite_store: Store) -> None:
    class Refusing(Ingest):
        async def route_events(self, event_ids: Any) -> dict[int, list[Any]]:
            raise AssertionError(f"nothing is due yet, but the relay routed {list(event_ids)}")

    ingest = Refusing(sqlite_store, None)
    fresh = await ingest.track(TrackCall(user_id="c-young", event="cart_item_added"),
                               route=False)

    relay = EventRelay(ingest, sqlite_store, grace=timedelta(minutes=5))
    assert await relay.pass_once() == 0
    row = await stored_event(sqlite_store, fresh.message_id)
    assert row is not None and row.routed_at is None


async def test_relay_stops_at_a_failure_and_keeps_the_rest_for_later(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    """With Temporal unreachable nothing is marked routed; once it is back, everything is."""
    key, contact = unique("outage"), unique("c")
    await publish_waiting_journey(sqlite_store, key)
    from temporalio.client import Client

    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True,
                                data_converter=pydantic_data_converter)
    down = Ingest(sqlite_store, Router(dead, sqlite_store))
    first = await down.track(TrackCall(user_id=contact, event="cart_item_added", timestamp=T0),
                             route=False)
    second = await down.track(TrackCall(user_id=contact, event="cart_item_added",
                                        timestamp=T0 + timedelta(minutes=1)), route=False)

    assert await EventRelay(down, sqlite_store, grace=timedelta(0)).pass_once() == 0
    for message_id in (first.message_id, second.message_id):
        row = await stored_event(sqlite_store, message_id)
        assert row is not None and row.routed_at is None

    async with engine(temporal_env, sqlite_store) as up:
        assert await EventRelay(up, sqlite_store, grace=timedelta(0)).pass_once() == 2
