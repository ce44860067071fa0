"""An identify that changes a trait stores `attribute_changed`; an unchanged one stores none."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from cairn.events.calls import IdentifyCall
from cairn.events.ingest import Ingest, IngestResult
from cairn.journey import Journey
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from starter.testing import Scenario, Simulator, parse_scenario
from tests.engine_support import (
    MARK_AND_END,
    T0,
    engine,
    entries_of,
    events_named,
    finished,
    publish,
    unique,
)


async def identify(ingest: Ingest, contact: str, minutes: int, message_id: str | None = None,
                   **traits: Any) -> IngestResult:
    return await ingest.identify(IdentifyCall(
        user_id=contact, traits=traits, timestamp=T0 + timedelta(minutes=minutes),
        **({"message_id": message_id} if message_id else {})))


async def changes(store: Store, contact: str) -> list[dict[str, Any]]:
    return [e.properties for e in await events_named(store, "attribute_changed", contact)]


async def test_changed_traits_are_announced_with_from_and_to(store: Store) -> None:
    ingest = Ingest(store, None, attribute_changes=True)
    await identify(ingest, "c-1", 0, "first", plan="trial", email="ana@example.com")
    assert await changes(store, "c-1") == [
        {"attribute": "plan", "from": None, "to": "trial"},
        {"attribute": "email", "from": None, "to": "ana@example.com"},
    ]
    await identify(ingest, "c-1", 1, plan="trial", email="ana@example.com", _sync="x")
    await identify(ingest, "c-1", 2, "first", plan="enterprise")  # a repeated messageId
    assert len(await changes(store, "c-1")) == 2

    await identify(ingest, "c-1", 3, plan="pro", seats=5)
    assert (await changes(store, "c-1"))[2:] == [
        {"attribute": "plan", "from": "trial", "to": "pro"},
        {"attribute": "seats", "from": None, "to": 5},
    ]
    await identify(ingest, "c-1", 4, consent={"email": True})
    await identify(ingest, "c-1", 5, consent={"email": True})
    assert (await changes(store, "c-1"))[4:] == [
        {"attribute": "consent", "from": None, "to": {"email": True}}]


async def test_change_events_are_opt_in_for_embedded_ingest(store: Store) -> None:
    """`cairn dev`, `cairn api`, imports and simulations switch them on; a bare Ingest not."""
    await identify(Ingest(store, None), "c-2", 0, plan="pro")
    assert await changes(store, "c-2") == []


async def test_a_plan_change_starts_the_journey_and_a_same_plan_identify_does_not(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    key = unique("upgraded")
    await publish(store, {"key": key, "name": "Welcome to Pro",
                          "trigger": {"attribute_changed": "plan", "to": "pro"},
                          "entry": {"reentry": "concurrent", "key_by": "message_id"},
                          "steps": MARK_AND_END})
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, attribute_changes=True)
        await identify(ingest, "c-3", 0, plan="trial")
        assert await entries_of(store, key) == []

        upgrade = await identify(ingest, "c-3", 10, plan="pro", seats=3)
        assert [(d.journey, d.action) for d in upgrade.routes] == [(key, "started")]
        [entry] = await entries_of(store, key)
        assert (await finished(temporal_env, entry.workflow_id)).outcome == "completed"

        same = await identify(ingest, "c-3", 20, plan="pro", seats=4)
        assert same.routes == []
        assert len(await entries_of(store, key)) == 1
        assert [c["attribute"] for c in await changes(store, "c-3")] == [
            "plan", "plan", "seats", "seats"]

        # Through the HTTP API: the change is routed after the answer, like the identify.
        app = create_app(store, ingest, settings=Settings(database_url=store.url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test") as api:
            answer = await api.post("/v1/identify", json={
                "userId": "c-4", "traits": {"plan": "pro"},
                "timestamp": (T0 + timedelta(minutes=30)).isoformat()})
            assert answer.status_code == 202
        [via_api] = [e for e in await entries_of(store, key) if e.contact_id == "c-4"]
        assert (await finished(temporal_env, via_api.workflow_id)).outcome == "completed"
        [event] = await events_named(store, "attribute_changed", "c-4")
        assert event.routed_at is not None


async def test_an_attribute_change_journey_can_be_simulated(
    temporal_env: WorkflowEnvironment,
) -> None:
    journey = Journey.model_validate({
        "key": "welcome-to-pro", "name": "Welcome to Pro",
        "trigger": {"attribute_changed": "plan", "from": "trial", "to": "pro"},
        "steps": MARK_AND_END})

    def scenario(*plans: str) -> Scenario:
        return parse_scenario({
            "now": "2026-03-02T09:00:00Z", "until": "+1h",
            "contact": {"id": "c-9", "attributes": {"plan": "trial"}},
            "events": [{"at": f"+{i}m", "type": "identify", "traits": {"plan": plan}}
                       for i, plan in enumerate(plans)]})

    # A server of the simulation's own: runs the router tests above ended can stall a clock.
    async with Simulator.start() as sim:
        assert (await sim.run(journey, scenario("trial", "pro"))).outcome == "completed"
        assert (await sim.run(journey, scenario("trial", "trial"))).outcome == "not_entered"
