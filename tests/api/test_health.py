"""`/v1/health` answers from the process alone; `/v1/ready` names what is down."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _client(store: Store, temporal: Client | None) -> httpx.AsyncClient:
    app = create_app(store, Ingest(store, None), settings=Settings(database_url=store.url),
                     temporal=temporal)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cairn.test")


@pytest_asyncio.fixture
async def unreachable_store() -> AsyncIterator[Store]:
    """A store whose database is a port nothing listens on: every query fails to connect."""
    engine = create_async_engine(f"postgresql+asyncpg://cairn:cairn@127.0.0.1:{_closed_port()}/x")
    yield Store("postgresql+asyncpg://unreachable", engine)
    await engine.dispose()


async def _unreachable_temporal() -> Client:
    return await Client.connect(f"127.0.0.1:{_closed_port()}", lazy=True,
                                data_converter=pydantic_data_converter)


async def test_health_answers_without_the_store(unreachable_store: Store) -> None:
    async with _client(unreachable_store, None) as api:
        response = await api.get("/v1/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_when_store_and_temporal_answer(
    store: Store, temporal_env: WorkflowEnvironment,
) -> None:
    async with _client(store, temporal_env.client) as api:
        response = await api.get("/v1/ready")

    assert response.status_code == 200
    assert response.json() | {"version": ""} == {
        "status": "ready", "store": "reachable", "temporal": "reachable", "version": "",
        "down": [],
    }


async def test_ready_is_503_naming_temporal_when_it_is_down(store: Store) -> None:
    async with _client(store, await _unreachable_temporal()) as api:
        response = await api.get("/v1/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["temporal"]
    assert body["store"] == "reachable"
    assert body["temporal"].startswith("unreachable")


async def test_ready_is_503_naming_the_store_when_it_is_down(
    unreachable_store: Store, temporal_env: WorkflowEnvironment,
) -> None:
    async with _client(unreachable_store, temporal_env.client) as api:
        response = await api.get("/v1/ready")

    assert response.status_code == 503
    assert response.json()["down"] == ["store"]
    assert response.json()["temporal"] == "reachable"


async def test_ready_documents_its_answers(store: Store) -> None:
    async with _client(store, None) as api:
        spec = (await api.get("/openapi.json")).json()

    assert set(spec["paths"]["/v1/ready"]["get"]["responses"]) == {"200", "503"}
    assert set(spec["paths"]["/v1/health"]["get"]["responses"]) == {"200"}


async def test_the_probes_answer_without_a_key(anonymous_api: httpx.AsyncClient) -> None:
    """Load balancers and orchestrators call them with no credentials; everything else is shut."""
    health = await anonymous_api.get("/v1/health")
    ready = await anonymous_api.get("/v1/ready")
    contacts = await anonymous_api.get("/v1/contacts/c-1")
    assert health.status_code == 200 and ready.status_code in (200, 503)
    assert contacts.status_code == 401
