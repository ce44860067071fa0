"""Fixtures of the console tests: the API app (which serves the console) on this test's store,
and an in-process client that logs in with a key of a given scope."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from fastapi import FastAPI

from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from tests.api_support import new_key

BASE = "http://cairn.test"


@pytest_asyncio.fixture
async def app(sqlite_store: Store) -> FastAPI:
    settings = Settings(database_url=sqlite_store.url, secret_key="console-test-key",
                        temporal_ui_url="http://ui.test:8233")
    return create_app(sqlite_store, Ingest(sqlite_store, None), settings=settings)


@pytest_asyncio.fixture
async def browser_less(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without a session (cookies kept, redirects not followed)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def log_in(client: httpx.AsyncClient, store: Store, scope: str = "admin") -> str:
    """Log `client` in with a new key of `scope`; answers the session's CSRF token."""
    secret = await new_key(store, scope)
    answer = await client.post("/console/login", data={"key": secret, "next": "/console"})
    assert answer.status_code == 303, answer.text
    page = await client.get("/console/tasks")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)
