"""End to end (a Temporal dev server and two processes; about 15 s).

`cairn api` routes in a process of its own (`starter.routing`): the API process only stores.

A real Temporal dev server, a real SQLite store shared by this test (storing as the API does,
without routing) and the routing process: what is stored is routed into Temporal, and after the
routing process is killed it is started again and routes what was stored meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cairn.catalog import publish_catalog
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.journey_run import workflow_id
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import Event
from starter.dev import DevServer, dev_server_for, free_port
from starter.routing import routing_process
from starter.temporal import connect
from tests.engine_support import unique

CATALOG = Path(__file__).resolve().parents[2] / "journeys"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[DevServer, Settings]]:
    settings = Settings(home=tmp_path, temporal_port=free_port(), ui_port=free_port(),
                        journeys_dir=CATALOG, database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db")
    dev = dev_server_for(settings, headless=True)
    await dev.start(settings)
    try:
        yield dev, settings.model_copy(update={"temporal_address": dev.address})
    finally:
        await dev.stop()


async def routed(store: Store, message_id: str, within: float = 30.0) -> Event:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with store.session() as session:
            row = await session.scalar(select(Event).where(Event.message_id == message_id))
        if row is not None and row.routed_at is not None:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} was not routed within {within} s")


async def test_the_routing_process_routes_what_the_api_stores_and_comes_back_when_killed(
    server: tuple[DevServer, Settings],
) -> None:
    _, settings = server
    store = await Store.open(settings.store_url)
    client = await connect(settings)
    try:
        await publish_catalog(store, CATALOG)
        api = Ingest(store, None, background_routing=False)  # what `cairn api` stores
        async with routing_process(settings) as routing:
            first, second = unique("cart"), unique("cart")
            for contact, message_id in ((first, "m-1"), (second, "m-2")):
                await api.track(TrackCall(user_id=contact, event="cart_item_added",
                                          message_id=f"{contact}-{message_id}",
                                          properties={"value": 30}),
                                route=False)
                if contact == first:
                    await routed(store, f"{contact}-{message_id}")
                    assert routing.process is not None and routing.process.pid is not None
                    os.kill(routing.process.pid, signal.SIGKILL)
            await routed(store, f"{second}-m-2")
            assert routing.restarts == 1
        for contact in (first, second):
            description = await client.get_workflow_handle(
                workflow_id("cart-abandonment", contact)).describe()
            assert description.search_attributes  # started by the routing process
    finally:
        await store.close()
