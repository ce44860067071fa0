"""Fixtures of the HTTP API tests: the app on this test's store, called in-process (`api`) or
served by uvicorn on a loopback port (`base_url`, for real HTTP clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from starter.testing import serving
from tests.api_support import admin, api_client, new_key


@pytest_asyncio.fixture
async def api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API over `store`, calling as an admin key; its Ingest has no router, so
    no journey starts. `api_client(app, scope=None)` (tests.api_support) calls without a key."""
    app = create_app(store, Ingest(store, None), settings=Settings(database_url=store.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test",
                                 auth=admin(app.state.store)) as client:
        yield client


@pytest_asyncio.fixture
async def anonymous_api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API over `store` that sends no key (every keyed route answers 401)."""
    app = create_app(store, Ingest(store, None), settings=Settings(database_url=store.url))
    async with api_client(app, scope=None) as client:
        yield client


@pytest_asyncio.fixture
async def write_key(sqlite_store: Store) -> str:
    """A write key in the store the served API (`base_url`) reads."""
    return await new_key(sqlite_store, "write")


@pytest_asyncio.fixture
async def base_url(sqlite_store: Store) -> AsyncIterator[str]:
    """The API on a free loopback port, served by uvicorn in this event loop."""
    app = create_app(sqlite_store, Ingest(sqlite_store, None),
                     settings=Settings(database_url=sqlite_store.url))
    async with serving(app) as url:
        yield url
