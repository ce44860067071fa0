"""Segment's and RudderStack's official Python libraries, in their default batching mode with gzip
on, pointed at the real API on loopback: every call type arrives and is stored."""

from __future__ import annotations

import asyncio
from typing import Any

from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from sqlalchemy import select

from cairn.store.db import Store
from cairn.store.schema import Contact, Event, RejectedCall


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
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    errors: list[Any] = []
    client = SegmentClient(write_key, host=base_url, gzip=True, max_retries=0,
                           on_error=lambda error, batch: errors.append(error))

    await asyncio.to_thread(send_every_call, client)

    await assert_every_call_stored(sqlite_store, errors)


async def test_rudder_sdk_python_delivers_every_call(
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    errors: list[Any] = []
    client = RudderClient(write_key, host=base_url, max_retries=0,
                          on_error=lambda error, batch: errors.append(error))
    assert client.gzip  # RudderStack compresses by default

    await asyncio.to_thread(send_every_call, client)

    await assert_every_call_stored(sqlite_store, errors)


async def test_a_source_with_a_wrong_write_key_delivers_nothing(
    base_url: str, sqlite_store: Store
) -> None:
    errors: list[Any] = []
    client = SegmentClient("not-a-cairn-key", host=base_url, gzip=True, max_retries=0,
                           on_error=lambda error, batch: errors.append(error))

    await asyncio.to_thread(send_every_call, client)

    assert errors and all("401" in str(error) for error in errors), errors
    async with sqlite_store.session() as session:
        assert list(await session.scalars(select(Event))) == []
