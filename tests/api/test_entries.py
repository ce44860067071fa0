"""`POST /v1/journeys/{key}/entries` starts `api: true` journeys and refuses the others; failed
entries are listed (`GET /v1/entries?status=failed`) and re-entered (`POST .../reenter`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
from temporalio.testing import WorkflowEnvironment

from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.failed_runs import close_failed_runs
from cairn.journey_run import workflow_id
from cairn.settings import Settings
from cairn.store import entries as entries_repo
from cairn.store.db import Store
from starter.api.app import create_app
from tests.api_support import admin
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
                                 base_url="http://cairn.test",
                                 auth=admin(app.state.store)) as client:
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


# --------------------------------------------------------------------------- failed entries

PAUSE_A_DAY = {"pause": {"wait": "1d", "next": "end"}}


async def test_a_terminated_run_closes_failed_lists_and_is_reentered(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key = unique("fragile")
    await publish(store, {"key": key, "name": "Fragile", "trigger": {"api": True},
                          "entry": {"reentry": "never"}, "steps": PAUSE_A_DAY})
    async with engine(temporal_env, store) as router, api_over(store, router) as api:
        started = await api.post(f"/v1/journeys/{key}/entries",
                                 json={"userId": "c-1", "messageId": "enrol-f1"})
        assert started.json()["decision"]["action"] == "started", started.text
        wid = workflow_id(key, "c-1")
        await temporal_env.client.get_workflow_handle(wid).terminate(
            reason="stuck on an outage")

        closed = await close_failed_runs(store, temporal_env.client,
                                         now=datetime.now(UTC) + timedelta(minutes=1))

        [entry] = await entries_of(store, key)
        assert [c.entry_id for c in closed] == [entry.id]
        assert entry.outcome == "failed" and entry.ended_at is not None
        assert entry.reason is not None and entry.reason.startswith("run terminated")
        assert "stuck on an outage" in entry.reason
        listed = await api.get("/v1/entries", params={"status": "failed", "journey": key})
        assert listed.status_code == 200
        assert [(e["id"], e["outcome"]) for e in listed.json()] == [(entry.id, "failed")]

        again = await api.post(f"/v1/entries/{entry.id}/reenter")

        assert again.status_code == 202, again.text
        assert again.json()["decision"]["action"] == "started"
        assert again.json()["decision"]["workflowId"] == wid
        first, second = await entries_of(store, key)
        assert (first.outcome, second.outcome, second.ended_at) == (
            "failed:reentered", None, None)
        assert second.trigger_message_id == "enrol-f1"
        assert (await api.get("/v1/entries", params={"journey": key})).json() == []
        open_now = (await api.get("/v1/entries", params={"status": "open",
                                                         "journey": key})).json()
        assert [e["id"] for e in open_now] == [second.id]
        assert (await api.post(f"/v1/entries/{entry.id}/reenter")).status_code == 409
        # the running entry counts for `never`: a new request is refused
        refused = await api.post(f"/v1/journeys/{key}/entries", json={"userId": "c-1"})
        assert refused.json()["decision"]["action"] in ("refused", "signalled")


async def test_reenter_answers_404_409_and_503_naming_why(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key = unique("steady")
    await publish(store, {"key": key, "name": "Steady", "trigger": {"api": True},
                          "steps": PAUSE_A_DAY})
    async with engine(temporal_env, store) as router, api_over(store, router) as api:
        await api.post(f"/v1/journeys/{key}/entries", json={"userId": "c-2"})
        [running] = await entries_of(store, key)
        missing = await api.post("/v1/entries/987654/reenter")
        not_failed = await api.post(f"/v1/entries/{running.id}/reenter")
        too_big = await api.post(f"/v1/entries/{2**40}/reenter")
        assert missing.status_code == 404 and "no entry #987654" in missing.json()["detail"]
        assert not_failed.status_code == 409
        assert "still running" in not_failed.json()["detail"]
        assert too_big.status_code == 422
    async with api_over(store, None) as api:
        # Checked before routing: an entry that is not failed is a 409 even without Temporal.
        assert (await api.post(f"/v1/entries/{running.id}/reenter")).status_code == 409
        async with store.session() as s, s.begin():
            await entries_repo.fail_entry(s, running.workflow_id, "broken step", datetime.now(UTC))
        unavailable = await api.post(f"/v1/entries/{running.id}/reenter")
        assert unavailable.status_code == 503 and "no Temporal" in unavailable.json()["detail"]
        assert (await api.get("/v1/entries", params={"status": "closed"})).status_code == 422
