"""`POST /v1/journeys/{key}/entries` starts `api: true` journeys and refuses the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from temporalio.testing import WorkflowEnvironment

from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey_run import workflow_id
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from tests.engine_support import (
    MARK_AND_END,
    engine,
    entries_of,
    events_named,
    finished,
    publish,
    unique,
)


@asynccontextmanager
async def api_over(store: Store, router: Router | None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, Ingest(store, router), settings=Settings(database_url=store.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test") as client:
        yield client


async def test_an_entry_request_starts_an_api_journey(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    key = unique("api")
    await publish(store, {"key": key, "name": "Enrolled by support", "trigger": {"api": True},
                          "entry": {"reentry": "never"}, "steps": MARK_AND_END})
    async with engine(temporal_env, store) as router, api_over(store, router) as api:
        answer = await api.post(f"/v1/journeys/{key}/entries", json={
            "userId": "c-1", "properties": {"order_id": "o-9"}, "messageId": "enrol-1"})
        assert answer.status_code == 202, answer.text
        body = answer.json()
        wid = workflow_id(key, "c-1")
        assert body["decision"]["action"] == "started"
        assert body["decision"]["workflowId"] == wid
        assert (body["routed"], body["duplicate"]) == (True, False)
        assert (await finished(temporal_env, wid)).outcome == "completed"
        [stored] = await events_named(store, "journey_entry_requested", "c-1")
        assert stored.properties == {"order_id": "o-9", "journey": key}

        repeated = await api.post(f"/v1/journeys/{key}/entries", json={
            "userId": "c-1", "messageId": "enrol-1"})
        assert repeated.status_code == 202
        assert repeated.json()["duplicate"] is True
        assert repeated.json()["decision"]["action"] == "started"  # the original entry

        refused = await api.post(f"/v1/journeys/{key}/entries", json={"userId": "c-1"})
        assert refused.status_code == 202
        assert refused.json()["decision"]["action"] == "refused"
        assert refused.json()["decision"]["reason"].startswith("entry: never")
        assert len(await entries_of(store, key)) == 1


async def test_only_published_api_journeys_take_entries(store: Store) -> None:
    await publish(store, {"key": "by-event", "name": "By event", "trigger": {"event": "signup"},
                          "steps": MARK_AND_END})
    async with api_over(store, None) as api:
        missing = await api.post("/v1/journeys/nope/entries", json={"userId": "c-1"})
        assert missing.status_code == 404
        assert "no published journey 'nope'" in missing.json()["detail"]
        wrong = await api.post("/v1/journeys/by-event/entries", json={"userId": "c-1"})
        assert wrong.status_code == 422
        assert "api: true" in wrong.json()["detail"]
        malformed = await api.post("/v1/journeys/by-event/entries", json={"properties": {}})
        assert malformed.status_code == 422
        assert "body.userId: Field required" in malformed.json()["errors"]
    assert await events_named(store, "journey_entry_requested") == []


async def test_without_temporal_the_request_is_kept_for_the_relay(store: Store) -> None:
    key = unique("api")
    await publish(store, {"key": key, "name": "Enrolled", "trigger": {"api": True},
                          "steps": MARK_AND_END})
    async with api_over(store, None) as api:
        answer = await api.post(f"/v1/journeys/{key}/entries", json={"userId": "c-2"})
    assert answer.status_code == 202
    assert (answer.json()["routed"], answer.json()["decision"]) == (False, None)
    [kept] = await events_named(store, "journey_entry_requested", "c-2")
    assert kept.routed_at is None
