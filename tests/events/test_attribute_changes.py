"""A change of a trait stores `attribute_changed`, whoever makes it: an identify, an `update`
step or a PATCH of the contact; an unchanged value stores none.

Against a real store (SQLite, and PostgreSQL when configured), the real Ingest, API and relay,
and the time-skipping server (per module, from conftest) where journeys must start.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.update import ProfileActivities
from cairn.contact import ContactSnapshot
from cairn.contracts import ProfileUpdateRequest, StepContext
from cairn.events.calls import GroupCall, IdentifyCall, TrackCall
from cairn.events.ingest import Ingest, IngestResult
from cairn.events.relay import EventRelay
from cairn.journey import Journey, ProfileUpdate
from cairn.settings import Settings
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from starter.api.app import create_app
from starter.api.auth import Keyring
from starter.api.contacts import contacts_router
from starter.testing import Scenario, Simulator, parse_scenario
from tests.api_support import admin
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


async def test_joining_or_changing_a_group_is_announced_like_a_trait(store: Store) -> None:
    ingest = Ingest(store, None, attribute_changes=True)

    async def group(minutes: int, group_id: str, message_id: str, **traits: Any) -> None:
        await ingest.group(GroupCall(user_id="c-g", group_id=group_id, traits=traits,
                                     message_id=message_id,
                                     timestamp=T0 + timedelta(minutes=minutes)))

    await group(0, "acme", "g-1", plan="pro")
    await group(1, "acme", "g-1", plan="enterprise")  # a repeated messageId: nothing new
    await group(2, "acme", "g-2", plan="pro")  # the same group, the same traits: no change
    await group(3, "acme", "g-3", plan="enterprise")
    assert await changes(store, "c-g") == [
        {"attribute": "group", "from": None, "to": {"id": "acme", "plan": "pro"}},
        {"attribute": "group", "from": {"id": "acme", "plan": "pro"},
         "to": {"id": "acme", "plan": "enterprise"}},
    ]


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
                                     base_url="http://cairn.test",
                                     auth=admin(app.state.store)) as api:
            answer = await api.post("/v1/identify", json={
                "userId": "c-4", "traits": {"plan": "pro"},
                "timestamp": (T0 + timedelta(minutes=30)).isoformat()})
            assert answer.status_code == 202
        [via_api] = [e for e in await entries_of(store, key) if e.contact_id == "c-4"]
        assert (await finished(temporal_env, via_api.workflow_id)).outcome == "completed"
        [event] = await events_named(store, "attribute_changed", "c-4")
        assert event.routed_at is not None


async def create(store: Store, contact_id: str, **attributes: Any) -> None:
    async with store.session() as session, session.begin():
        await contacts_repo.create_contact(session, ContactSnapshot(
            id=contact_id, consent={"marketing": True}, attributes=attributes), T0)


async def attribute_of(store: Store, contact_id: str, name: str) -> Any:
    async with store.session() as session:
        found = await contacts_repo.snapshot(session, contact_id)
    assert found is not None, f"no contact {contact_id}"
    return found.attributes[name]


def api_client(store: Store, ingest: Ingest) -> httpx.AsyncClient:
    app = create_app(store, ingest, settings=Settings(database_url=store.url))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cairn.test",
                             auth=admin(app.state.store))


# --------------------------------------------------------------------------- update steps


def step(step_name: str = "upgrade", *, iteration: int = 1, contact: str = "c-1",
         workflow_id: str = "journey/upgrade/c-1") -> StepContext:
    return StepContext(workflow_id=workflow_id, journey_key="upgrade", journey_version=1,
                       contact_id=contact, step=step_name, iteration=iteration, now=T0,
                       entry_id="run-1")


async def test_an_update_step_announces_each_changed_trait_once(store: Store) -> None:
    await create(store, "c-1", plan="trial", cart={"items": 2}, coupon="WELCOME")
    request = ProfileUpdateRequest(context=step(), update=ProfileUpdate.model_validate({
        "set": {"plan": "pro", "cart.items": 0, "consent.marketing": True,
                "consent.sms": {"marketing": False}, "suppressed": ["sms"]},
        "unset": ["coupon", "never_set"], "add_tags": ["customer"]}))
    activities = ProfileActivities(store)
    env = ActivityEnvironment()
    await env.run(activities.update_profile, request)
    await env.run(activities.update_profile, request)  # a retry of the same visit

    source = "update/journey/upgrade/c-1/run-1/upgrade/1"
    stored = await events_named(store, "attribute_changed", "c-1")
    assert [(e.message_id, e.properties) for e in stored] == [
        (f"{source}/attribute_changed/plan", {"attribute": "plan", "from": "trial", "to": "pro"}),
        (f"{source}/attribute_changed/cart",
         {"attribute": "cart", "from": {"items": 2}, "to": {"items": 0}}),
        (f"{source}/attribute_changed/consent",
         {"attribute": "consent", "from": {"marketing": True},
          "to": {"marketing": True, "sms": {"marketing": False}}}),
        (f"{source}/attribute_changed/coupon",
         {"attribute": "coupon", "from": "WELCOME", "to": None}),
    ]
    assert {(e.type, e.timestamp, e.routed_at) for e in stored} == {("attribute", T0, None)}

    # A later visit of the step that sets the same values changes nothing: nothing announced.
    again = ProfileUpdateRequest(context=step(iteration=2), update=request.update)
    await env.run(activities.update_profile, again)
    assert len(await changes(store, "c-1")) == 4


async def test_update_step_changes_start_attribute_changed_journeys(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    upgrade, welcome = unique("upgrade"), unique("welcome-pro")
    await publish(store, {
        "key": upgrade, "name": "Upgrade on request", "trigger": {"event": "upgrade_requested"},
        "steps": {"set_pro": {"update": {"set": {"plan": "pro"}}, "next": "end"}}})
    await publish(store, {
        "key": welcome, "name": "Welcome to Pro",
        "trigger": {"attribute_changed": "plan", "from": "trial", "to": "pro"},
        "steps": MARK_AND_END})
    await create(store, "c-up", plan="trial")
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, attribute_changes=True)
        await ingest.track(TrackCall(user_id="c-up", event="upgrade_requested", timestamp=T0))
        [run] = await entries_of(store, upgrade)
        assert (await finished(temporal_env, run.workflow_id)).outcome == "completed"
        assert await attribute_of(store, "c-up", "plan") == "pro"

        # The worker stored the change with the update; the relay routes it like any event.
        [change] = await events_named(store, "attribute_changed", "c-up")
        assert change.properties == {"attribute": "plan", "from": "trial", "to": "pro"}
        assert change.message_id.startswith(f"update/{run.workflow_id}/")
        assert await entries_of(store, welcome) == []
        assert await EventRelay(ingest, store, grace=timedelta(0)).pass_once() >= 1
        [entered] = await entries_of(store, welcome)
        assert entered.contact_id == "c-up"
        assert entered.trigger_message_id == change.message_id
        assert (await finished(temporal_env, entered.workflow_id)).outcome == "completed"

        # Given an Ingest, the activity routes its changes at once (and a retry adds none).
        await create(store, "c-now", plan="trial")
        direct = ProfileActivities(store, ingest=ingest)
        request = ProfileUpdateRequest(
            context=step(contact="c-now", workflow_id=f"journey/{upgrade}/c-now"),
            update=ProfileUpdate.model_validate({"set": {"plan": "pro"}}))
        env = ActivityEnvironment()
        await env.run(direct.update_profile, request)
        await env.run(direct.update_profile, request)
        [now_change] = await events_named(store, "attribute_changed", "c-now")
        assert now_change.routed_at is not None
        [now_entry] = [e for e in await entries_of(store, welcome) if e.contact_id == "c-now"]
        assert (await finished(temporal_env, now_entry.workflow_id)).outcome == "completed"


# --------------------------------------------------------------------------- PATCH


async def test_patch_announces_changes_and_starts_attribute_changed_journeys(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    welcome = unique("welcome-pro")
    await publish(store, {
        "key": welcome, "name": "Welcome to Pro",
        "trigger": {"attribute_changed": "plan", "from": "trial", "to": "pro"},
        "steps": MARK_AND_END})
    await create(store, "c-a", plan="trial")
    await create(store, "c-b", plan="trial")
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, attribute_changes=True)
        # The API's contact endpoints: without an Ingest the relay routes the change.
        async with api_client(store, ingest) as api:
            answer = await api.patch("/v1/contacts/c-a", json={
                "attributes": {"plan": "pro", "seats": None}, "email": "a@example.com"})
            same = await api.patch("/v1/contacts/c-a", json={"attributes": {"plan": "pro"}})
        assert (answer.status_code, same.status_code) == (200, 200), answer.text
        assert await changes(store, "c-a") == [
            {"attribute": "email", "from": None, "to": "a@example.com"},
            {"attribute": "plan", "from": "trial", "to": "pro"},
        ]
        await EventRelay(ingest, store, grace=timedelta(0)).pass_once()
        [entry_a] = await entries_of(store, welcome)
        assert entry_a.contact_id == "c-a"

        # Given the Ingest, the PATCH routes its changes right after the answer.
        bare = FastAPI()
        bare.state.store, bare.state.keyring = store, Keyring(store)
        bare.include_router(contacts_router(store, None, ingest=ingest))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare),
                                     base_url="http://cairn.test",
                                     auth=admin(bare.state.store)) as api:
            answer = await api.patch("/v1/contacts/c-b", json={"attributes": {"plan": "pro"}})
        assert answer.status_code == 200, answer.text
        [change_b] = await events_named(store, "attribute_changed", "c-b")
        assert change_b.routed_at is not None
        [entry_b] = [e for e in await entries_of(store, welcome) if e.contact_id == "c-b"]
        assert (await finished(temporal_env, entry_b.workflow_id)).outcome == "completed"


# --------------------------------------------------------------------------- simulation


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
