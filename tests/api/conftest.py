"""Fixtures of the HTTP API tests: the app on this test's store, called in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app


@pytest_asyncio.fixture
async def api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API over `store`; its Ingest has no router, so no journey starts."""
    app = create_app(store, Ingest(store, None), settings=Settings(database_url=store.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test") as client:
        yield client
