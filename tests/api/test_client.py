"""The Python client against the real API served by uvicorn on loopback (real HTTP)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from cairn.store.schema import Event
from starter.client import (
    AsyncCairnClient,
    CairnClient,
    CairnRefused,
    CairnRejected,
    CairnUnavailable,
    identify_call,
    track_call,
)
from tests.api_support import new_key


async def stored(store: Store) -> list[Event]:
    async with store.session() as session:
        return list(await session.scalars(select(Event).order_by(Event.id)))


async def test_async_client_tracks_identifies_and_batches(
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    async with AsyncCairnClient(base_url, key=write_key, timeout=5) as cairn:
        identified = await cairn.identify("c-1", {"email": "ana@example.com", "plan": "pro"})
        tracked = await cairn.track("c-1", "cart_item_added", {"value": 25},
                                    timestamp=datetime(2026, 3, 2, 9, tzinfo=UTC),
                                    message_id="m-1")
        repeated = await cairn.track("c-1", "cart_item_added", {"value": 25}, message_id="m-1")
        batched = await cairn.batch([
            track_call("c-2", "signup", {"source": "ads"}),
            identify_call("c-2", {"timezone": "Europe/Bucharest"}),
        ])

    assert not identified.duplicate
    assert (tracked.message_id, tracked.duplicate) == ("m-1", False)
    assert repeated.duplicate
    assert [ack.duplicate for ack in batched] == [False, False]
    rows = await stored(sqlite_store)
    assert [(row.contact_id, row.type, row.name) for row in rows] == [
        ("c-1", "identify", "identify"),
        ("c-1", "track", "cart_item_added"),
        ("c-2", "track", "signup"),
        ("c-2", "identify", "identify"),
    ]
    assert rows[0].message_id == identified.message_id
    assert rows[1].properties == {"value": 25}
    async with sqlite_store.session() as session:
        ana = await contacts_repo.snapshot(session, "c-1")
        other = await contacts_repo.snapshot(session, "c-2")
    assert ana is not None and ana.email == "ana@example.com"
    assert ana.attributes["plan"] == "pro"
    assert other is not None and other.timezone == "Europe/Bucharest"


async def test_sync_client_over_real_http(
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    def send() -> str:
        with CairnClient(base_url, key=write_key, timeout=5) as cairn:
            return cairn.track(None, "page_viewed", {"url": "/pricing"},
                               anonymous_id="anon-1").message_id

    message_id = await asyncio.to_thread(send)

    [row] = await stored(sqlite_store)
    assert (row.message_id, row.contact_id, row.name) == (message_id, "anon-1", "page_viewed")


async def test_malformed_calls_fail_in_the_caller(
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    async with AsyncCairnClient(base_url, key=write_key) as cairn:
        with pytest.raises(CairnRejected, match="userId or anonymousId"):
            await cairn.track(None, "signup")
        with pytest.raises(CairnRejected, match="event"):
            await cairn.track("c-1", "")

    assert await stored(sqlite_store) == []


async def test_an_unreachable_api_is_reported_with_what_to_check() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now

    async with AsyncCairnClient(f"http://127.0.0.1:{port}", retries=1) as cairn:
        with pytest.raises(CairnUnavailable, match="is `cairn dev` or `cairn api` running"):
            await cairn.track("c-1", "signup")


async def test_a_batch_answers_each_call_stored_or_rejected(
    base_url: str, sqlite_store: Store, write_key: str,
) -> None:
    async with AsyncCairnClient(base_url, key=write_key) as cairn:
        acks = await cairn.batch([
            track_call("c-1", "signup"),
            track_call("c-1", "noted", {"note": "x" * 40_000}),  # over the 32 KB a call may hold
        ])

    assert [ack.rejected for ack in acks] == [False, True]
    assert acks[1].errors and "32" in " ".join(acks[1].errors)
    [row] = await stored(sqlite_store)
    assert (row.message_id, row.name) == (acks[0].message_id, "signup")


async def test_the_key_is_sent_and_a_missing_or_read_key_is_refused_by_name(
    base_url: str, sqlite_store: Store, write_key: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_key = await new_key(sqlite_store, "read")
    async with AsyncCairnClient(base_url, retries=0) as nobody:
        with pytest.raises(CairnRefused, match="401"):
            await nobody.track("c-1", "signup")
    async with AsyncCairnClient(base_url, key=read_key, retries=0) as reader:
        with pytest.raises(CairnRefused, match="403"):
            await reader.track("c-1", "signup")
    monkeypatch.setenv("CAIRN_KEY", write_key)
    async with AsyncCairnClient(base_url) as from_environment:
        await from_environment.track("c-1", "signup")
    assert [row.name for row in await stored(sqlite_store)] == ["signup"]
