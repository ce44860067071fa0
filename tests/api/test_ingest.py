"""The HTTP API against a real SQLite store: what is stored, what is refused and how it is said."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig
from typer.testing import CliRunner

from cairn.catalog import CatalogError, load_catalog, publish_catalog
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import ProfileRules
from cairn.events.router import Router
from cairn.journey import Journey
from cairn.scoring import Scoring
from cairn.segments import parse_segment
from cairn.settings import Settings, get_settings
from cairn.store import contacts as contacts_repo
from cairn.store import deliveries as deliveries_repo
from cairn.store import entries as entries_repo
from cairn.store import events as events_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Contact, Event
from starter.api.app import create_app
from starter.api.errors import readable_errors
from starter.cli.main import app
from starter.dev import free_port
from tests.api_support import admin
from tests.engine_support import T0, events_named


async def events_with_id(store: Store, message_id: str) -> list[Event]:
    async with store.session() as session:
        rows = await session.scalars(select(Event).where(Event.message_id == message_id))
        return list(rows)


async def event_count(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


# --------------------------------------------------------------------------- accepted calls


async def test_track_is_stored_before_the_202(api: httpx.AsyncClient, store: Store) -> None:
    response = await api.post("/v1/track", json={
        "userId": "c-1", "event": "cart_item_added", "properties": {"value": 25},
        "timestamp": "2026-03-02T11:00:00+02:00", "messageId": "m-1",
        "context": {"ip": "10.0.0.1"}, "integrations": {"All": True},
    })

    assert response.status_code == 202
    assert response.json() == {"messageId": "m-1", "duplicate": False}
    [row] = await events_with_id(store, "m-1")
    assert (row.type, row.contact_id, row.name) == ("track", "c-1", "cart_item_added")
    assert row.properties == {"value": 25}
    assert row.timestamp.replace(tzinfo=row.timestamp.tzinfo or UTC) == datetime(
        2026, 3, 2, 9, 0, tzinfo=UTC)
    assert row.routed_at is None  # no router: stored, waiting to be routed
    async with store.session() as session:
        assert await session.get(Contact, "c-1") is not None


async def test_track_without_message_id_gets_one(api: httpx.AsyncClient, store: Store) -> None:
    response = await api.post("/v1/track", json={"anonymousId": "anon-7", "event": "page_viewed"})

    assert response.status_code == 202
    message_id = response.json()["messageId"]
    assert len(message_id) == 36
    [row] = await events_with_id(store, message_id)
    assert row.contact_id == "anon-7"


async def test_a_repeated_message_id_is_stored_once(api: httpx.AsyncClient, store: Store) -> None:
    call = {"userId": "c-2", "event": "purchase", "properties": {"total": 80}, "messageId": "m-2"}

    first = await api.post("/v1/track", json=call)
    again = await api.post("/v1/track", json={**call, "properties": {"total": 1}})

    assert first.json() == {"messageId": "m-2", "duplicate": False}
    assert again.status_code == 202
    assert again.json() == {"messageId": "m-2", "duplicate": True}
    [row] = await events_with_id(store, "m-2")
    assert row.properties == {"total": 80}


async def test_identify_merges_traits(api: httpx.AsyncClient, store: Store) -> None:
    first = await api.post("/v1/identify", json={
        "userId": "c-3", "messageId": "i-1",
        "traits": {"email": "ana@example.com", "timezone": "Europe/Bucharest",
                   "first_name": "Ana", "consent": {"marketing": True}},
    })
    second = await api.post("/v1/identify", json={
        "userId": "c-3", "messageId": "i-2", "traits": {"plan": "pro"},
    })

    assert first.status_code == second.status_code == 202
    contact = (await api.get("/v1/contacts/c-3")).json()
    assert contact["email"] == "ana@example.com"
    assert contact["timezone"] == "Europe/Bucharest"
    assert contact["consent"] == {"marketing": True}
    assert contact["attributes"]["first_name"] == "Ana"
    assert contact["attributes"]["plan"] == "pro"
    [row] = await events_with_id(store, "i-2")
    assert (row.type, row.name, row.properties) == ("identify", "identify", {"plan": "pro"})


async def test_batch_stores_mixed_calls_in_order(api: httpx.AsyncClient, store: Store) -> None:
    response = await api.post("/v1/batch", json={"batch": [
        {"type": "identify", "userId": "c-4", "traits": {"email": "b@example.com"},
         "messageId": "b-1"},
        {"type": "track", "userId": "c-4", "event": "signup", "messageId": "b-2"},
        {"type": "track", "userId": "c-4", "event": "signup", "messageId": "b-2"},
    ], "context": {"library": {"name": "analytics-python"}}})

    assert response.status_code == 200
    assert response.json() == [
        {"messageId": "b-1", "duplicate": False},
        {"messageId": "b-2", "duplicate": False},
        {"messageId": "b-2", "duplicate": True},
    ]
    assert await event_count(store) == 2
    contact = (await api.get("/v1/contacts/c-4")).json()
    assert contact["email"] == "b@example.com"


# --------------------------------------------------------------------------- refused calls


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/track", {"userId": "c-1"}, "body.event: Field required"),
        ("/v1/track", {"event": "signup"}, "userId or anonymousId"),
        ("/v1/track", {"userId": "  ", "event": "signup"}, "userId or anonymousId"),
        ("/v1/track", {"userId": 42, "event": "signup"},
         "body.userId: Input should be a valid string"),
        ("/v1/track", {"userId": "c-1", "event": "x", "properties": [1, 2]},
         "body.properties: Input should be a valid dictionary"),
        ("/v1/track", {"userId": "c-1", "event": "x", "timestamp": "yesterday"},
         "body.timestamp: Input should be a valid datetime"),
        ("/v1/identify", {"userId": "c-1", "traits": "vip"},
         "body.traits: Input should be a valid dictionary"),
        ("/v1/batch", {"batch": [5]}, "body.batch[0]: Input should be a valid dictionary"),
        ("/v1/batch", {"batch": []}, "body.batch: List should have at least 1 item"),
    ],
)
async def test_malformed_calls_get_a_422_naming_the_field(
    api: httpx.AsyncClient, store: Store, path: str, body: dict[str, Any], expected: str
) -> None:
    response = await api.post(path, json=body)

    assert response.status_code == 422
    payload = response.json()
    assert any(expected in line for line in payload["errors"]), payload["errors"]
    assert payload["detail"], "FastAPI's structured detail is kept beside the readable list"
    assert await event_count(store) == 0


async def test_a_body_that_is_not_json_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/track", content=b"{not json",
                              headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["errors"][0].startswith("body")


def test_readable_errors_leave_out_the_batch_item_tag() -> None:
    errors = [{"loc": ("body", "batch", 3, "identify", "traits"), "msg": "bad"}]

    assert readable_errors(errors) == ["body.batch[3].traits: bad"]


# --------------------------------------------------------------------------- read views


async def test_health_and_empty_views(api: httpx.AsyncClient) -> None:
    health = await api.get("/v1/health")

    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert (await api.get("/v1/outbox")).json() == []
    assert (await api.get("/v1/tasks")).json() == []
    assert (await api.get("/v1/journeys")).json() == []


async def test_unknown_contact_is_a_404_that_says_what_to_do(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/contacts/nobody")

    assert response.status_code == 404
    assert "send a track or identify call" in response.json()["detail"]


async def test_published_journeys_are_listed(api: httpx.AsyncClient, store: Store) -> None:
    journey = Journey.model_validate({
        "key": "api-welcome", "name": "Welcome", "trigger": {"event": "signup"},
        "steps": {"pause": {"wait": "1d", "next": "end"}},
    })
    async with store.session() as session, session.begin():
        await journeys_repo.publish(session, journey, source="journeys/welcome.yaml",
                                    now=datetime(2026, 3, 1, tzinfo=UTC))

    [listed] = (await api.get("/v1/journeys")).json()

    assert listed["key"] == "api-welcome"
    assert listed["version"] == 1
    assert listed["trigger"] == "event signup"
    assert listed["open_entries"] == 0


async def test_outbox_lists_the_latest_deliveries(api: httpx.AsyncClient, store: Store) -> None:
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    async with store.session() as session, session.begin():
        for n in (1, 2):
            await deliveries_repo.record_delivery(
                session, idempotency_key=f"journey/x/c-1/send/{n}", kind="send",
                workflow_id="journey/x/c-1", journey_key="x", step="send", contact_id="c-1",
                channel="email", provider="outbox", template="hello", category="marketing",
                status="sent", rendered={"subject": f"hello {n}"}, created_at=now, sent_at=now,
            )

    listed = (await api.get("/v1/outbox", params={"limit": 1})).json()

    assert len(listed) == 1
    assert listed[0]["rendered"]["subject"] in ("hello 1", "hello 2")
    assert (await api.get("/v1/outbox", params={"limit": 0})).status_code == 422


async def test_every_endpoint_is_documented_with_a_summary_and_an_example(
    api: httpx.AsyncClient,
) -> None:
    spec = (await api.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]

    def schema_has_example(schema: dict[str, Any]) -> bool:
        if "$ref" in schema:
            return "examples" in schemas[schema["$ref"].rsplit("/", 1)[-1]]
        if schema.get("type") == "array":
            return schema_has_example(schema["items"])
        return "example" in schema or "examples" in schema

    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            name = f"{method.upper()} {path}"
            assert operation.get("summary"), f"{name} has no summary"
            success = next(code for code in operation["responses"]
                           if code.startswith(("2", "3")))
            if success.startswith("3"):  # a redirect (tracked links): where it goes, no body
                assert "Location" in operation["responses"][success].get("headers", {}), (
                    f"{name} does not document its Location")
                continue
            content = operation["responses"][success]["content"]
            # Pages for people (unsubscribe) and TwiML for Twilio are not JSON.
            answer = content.get("application/json") or next(iter(content.values()))
            assert "example" in answer or schema_has_example(answer["schema"]), (
                f"{name} has no example answer")
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                assert "example" in body or schema_has_example(body["schema"]), (
                    f"{name} has no example {media} body")


# --------------------------------------------------------------------------- Temporal outage


async def test_an_accepted_event_survives_a_temporal_outage(store: Store) -> None:
    journey = Journey.model_validate({
        "key": "api-outage", "name": "Outage", "trigger": {"event": "signup"},
        "steps": {"pause": {"wait": "1d", "next": "end"}},
    })
    async with store.session() as session, session.begin():
        await journeys_repo.publish(session, journey, source=None, now=datetime.now(UTC))
    # Nothing listens on port 1: every Temporal call fails at once.
    down = await Client.connect("127.0.0.1:1", lazy=True, data_converter=pydantic_data_converter,
                                retry_config=RetryConfig(max_retries=0))
    ingest = Ingest(store, Router(down, store))
    app = create_app(store, ingest, settings=Settings(database_url=store.url))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test",
                                 auth=admin(app.state.store)) as client:
        response = await client.post("/v1/track", json={
            "userId": "c-9", "event": "signup", "messageId": "outage-1"})

    assert response.status_code == 202
    [row] = await events_with_id(store, "outage-1")
    assert row.routed_at is None
    again = await ingest.track(TrackCall.model_validate(
        {"userId": "c-9", "event": "signup", "messageId": "outage-2"}))
    assert again.routed is False
    assert again.routes == []
    async with store.session() as session:
        assert await entries_repo.entries_for(session, "api-outage") == []


# --------------------------------------------------------------------------- catalog publishing

CATALOG = Path(__file__).resolve().parents[2] / "journeys"


def copy_catalog(target: Path) -> Path:
    shutil.copytree(CATALOG, target)
    return target


async def test_publishing_the_catalog_makes_versions_only_for_changes(
    api: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    folder = copy_catalog(tmp_path / "journeys")

    first = await publish_catalog(store, folder)
    again = await publish_catalog(store, folder)
    cart = folder / "cart-abandonment.yaml"
    cart.write_text(cart.read_text().replace("name: Reduce cart abandonment",
                                             "name: Win back carts"))
    changed = await publish_catalog(store, folder)

    keys = sorted(path.stem for path in folder.glob("*.yaml"))
    assert [(row.key, row.version, new) for row, new in first] == [
        (key, 1, True) for key in keys]
    assert all(new is False and row.version == 1 for row, new in again)
    # Only the journey whose file changed gets a new version.
    assert [(row.key, row.version) for row, new in changed if new] == [("cart-abandonment", 2)]
    listed = {j["key"]: j for j in (await api.get("/v1/journeys")).json()}
    assert sorted(listed) == keys
    cart_listed = listed["cart-abandonment"]
    assert (cart_listed["version"], cart_listed["name"]) == (2, "Win back carts")
    assert cart_listed["source"].endswith("cart-abandonment.yaml")
    assert [journey.key for journey in load_catalog(folder)] == keys


async def test_an_invalid_catalog_publishes_nothing(store: Store, tmp_path: Path) -> None:
    folder = copy_catalog(tmp_path / "journeys")
    (folder / "broken.yaml").write_text(
        "key: broken\nname: Broken\ntrigger: {event: signup}\n"
        "steps:\n  hello: {wait: 1h, next: nowhere}\n")

    with pytest.raises(CatalogError) as raised:
        await publish_catalog(store, folder)

    assert "nothing was published" in str(raised.value)
    assert any("nowhere" in str(problem) for problem in raised.value.problems)
    async with store.session() as session:
        assert await journeys_repo.published(session) == []


async def test_a_missing_catalog_folder_says_what_to_give(store: Store, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="give a folder of journey files"):
        await publish_catalog(store, tmp_path / "nope")


def test_cairn_publish_prints_key_version_and_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_catalog(tmp_path / "journeys")
    monkeypatch.setenv("CAIRN_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    # No Temporal here (a closed port): publish must not touch a server someone runs on 7233.
    monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(app, ["publish", str(folder)])
        again = runner.invoke(app, ["publish", str(folder)])
        (folder / "bad.yaml").write_text("key: bad\nname: Bad\n")
        broken = runner.invoke(app, ["publish", str(folder)])
    finally:
        get_settings.cache_clear()

    assert first.exit_code == 0, first.output
    assert "cart-abandonment" in first.output
    assert "yes" in first.output
    assert "no (unchanged)" in again.output
    assert broken.exit_code == 1
    assert "bad.yaml" in broken.output


async def test_a_trait_the_store_cannot_keep_is_a_422_naming_it(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        app = create_app(store, Ingest(store, None), settings=Settings(database_url=db_url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test",
                                     auth=admin(app.state.store)) as client:
            answer = await client.post(
                "/v1/identify", json={"userId": "c-tz", "traits": {"timezone": "Europe/Nowhere"}}
            )
        assert answer.status_code == 422
        assert answer.json()["errors"][0].startswith("body.traits: timezone: 'Europe/Nowhere'")
    finally:
        await store.close()


# --------------------------------------------------------------------------- pages


async def test_a_page_view_is_stored_as_page_viewed_with_its_url(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        app = create_app(store, Ingest(store, None), settings=Settings(database_url=db_url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test",
                                     auth=admin(app.state.store)) as client:
            answer = await client.post("/v1/page", json={
                "userId": "c-page", "name": "Pricing", "messageId": "page-1",
                "context": {"page": {"url": "https://shop.example/pricing"}}})
            missing = await client.post("/v1/page", json={"name": "Pricing"})
        assert answer.status_code == 202
        assert missing.status_code == 422
        async with store.session() as session:
            stored = await events_repo.event_by_message_id(session, "page-1")
        assert stored is not None
        assert (stored.name, stored.properties.get("url")) == (
            "page_viewed", "https://shop.example/pricing"
        )
    finally:
        await store.close()


async def test_a_page_item_in_a_batch_is_stored_and_decides_url_segments_like_v1_page(
    store: Store,
) -> None:
    found, problems = parse_segment("pricing.yaml", {
        "key": "pricing_visitors", "rule": {"visited": {"url_contains": ["pricing"]}}})
    assert found is not None and not problems
    ingest = Ingest(store, None, clock=lambda: T0,
                    profile_rules=ProfileRules(store, [found], Scoring([]), clock=lambda: T0))
    page = {"name": "Pricing", "properties": {"title": "Pricing"},
            "context": {"page": {"url": "https://shop.example/pricing?ref=ad"}},
            "timestamp": T0.isoformat()}
    app = create_app(store, ingest, settings=Settings(database_url=store.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test",
                                 auth=admin(app.state.store)) as api:
        alone = await api.post("/v1/page", json={"userId": "c-page", "messageId": "p-1", **page})
        batched = await api.post("/v1/batch", json={"batch": [
            {"type": "identify", "userId": "c-batch", "traits": {"plan": "pro"}},
            {"type": "page", "userId": "c-batch", "messageId": "p-2", **page},
            {"type": "track", "userId": "c-batch", "event": "signup"},
        ]})
    assert (alone.status_code, batched.status_code) == (202, 200), batched.text
    assert [a["messageId"] for a in batched.json()][1] == "p-2"

    async with store.session() as session:
        one = await events_repo.event_by_message_id(session, "p-1")
        other = await events_repo.event_by_message_id(session, "p-2")
    assert one is not None and other is not None
    assert (other.type, other.name, other.properties) == (one.type, one.name, one.properties)
    assert other.properties == {"title": "Pricing", "url": "https://shop.example/pricing?ref=ad",
                                "name": "Pricing"}
    # the URL segment was decided for both, and both entries were announced
    for contact in ("c-page", "c-batch"):
        async with store.session() as session:
            snapshot = await contacts_repo.snapshot(session, contact)
        assert snapshot is not None and snapshot.segments == ["pricing_visitors"]
        [entered] = await events_named(store, "segment_entered", contact)
        assert entered.properties == {"segment": "pricing_visitors"}
