"""Segment's and RudderStack's official Python libraries, in their default batching mode with gzip
on, pointed at the real API on loopback: every call type arrives and is stored."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
import uvicorn
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from sqlalchemy import select

from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import Contact, Event, RejectedCall
from starter.api.app import create_app


@pytest_asyncio.fixture
async def base_url(sqlite_store: Store) -> AsyncIterator[str]:
    """The API on a free loopback port, served by uvicorn in this event loop."""
    app = create_app(sqlite_store, Ingest(sqlite_store, None),
                     settings=Settings(database_url=sqlite_store.url))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        listener.close()


def send_every_call(client: Any) -> None:
    """One call of each type, as an application would make them, then wait for delivery."""
    client.page(anonymous_id="anon-9", name="Pricing",
                properties={"url": "https://shop.example/pricing"})
    client.identify("u-9", {"email": "ana@example.com", "plan": "trial"})
    client.alias("anon-9", "u-9")
    client.track("u-9", "cart_item_added", {"value": 25.5, "sku": "mug-01"})
    client.screen("u-9", name="Checkout", properties={"step": 2})
    client.group("u-9", "acme", {"name": "Acme", "plan": "enterprise"})
    client.flush()
    client.join()


async def assert_every_call_stored(store: Store, errors: list[Any]) -> None:
    assert errors == []
    async with store.session() as session:
        rows = list(await session.scalars(select(Event).order_by(Event.id)))
        user = await session.get(Contact, "u-9")
        refused = list(await session.scalars(select(RejectedCall)))
    assert [(row.type, row.name) for row in rows] == [
        ("page", "page_viewed"), ("identify", "identify"), ("alias", "alias"),
        ("track", "cart_item_added"), ("screen", "screen_viewed"), ("group", "group")]
    assert {row.contact_id for row in rows} == {"u-9"}  # the alias folded the visitor in
    assert rows[0].properties["url"] == "https://shop.example/pricing"
    assert rows[3].properties == {"value": 25.5, "sku": "mug-01"}
    assert user is not None and user.email == "ana@example.com"
    assert user.attributes["group"] == {"id": "acme", "name": "Acme", "plan": "enterprise"}
    assert refused == []


async def test_segment_analytics_python_delivers_every_call(
    base_url: str, sqlite_store: Store
) -> None:
    errors: list[Any] = []
    client = SegmentClient("write-key", host=base_url, gzip=True, max_retries=0,
                           on_error=lambda error, batch: errors.append(error))

    await asyncio.to_thread(send_every_call, client)

    await assert_every_call_stored(sqlite_store, errors)


async def test_rudder_sdk_python_delivers_every_call(base_url: str, sqlite_store: Store) -> None:
    errors: list[Any] = []
    client = RudderClient("write-key", host=base_url, max_retries=0,
                          on_error=lambda error, batch: errors.append(error))
    assert client.gzip  # RudderStack compresses by default

    await asyncio.to_thread(send_every_call, client)

    await assert_every_call_stored(sqlite_store, errors)
