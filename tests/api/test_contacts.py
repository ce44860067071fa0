"""Contact endpoints over a real SQLite store (and a time-skipping Temporal server for erasure):
read, change preferences, erase, alias, and calls that still carry an aliased anonymous id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cairn.contact import ContactSnapshot
from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey import Journey
from cairn.journey_run import STATE_QUERY, JourneyResult, JourneyStateView, workflow_id
from cairn.reachability import reachability
from cairn.settings import Settings
from cairn.store import contacts as contacts_repo
from cairn.store import deliveries as deliveries_repo
from cairn.store import events as events_repo
from cairn.store import journeys as journeys_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store import suppressions
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from cairn.store.schema import (
    Base,
    Contact,
    Delivery,
    DeliveryFeedback,
    Entry,
    ErasedSuppression,
    Event,
    Score,
    ScoreChangeRecord,
    SegmentMembership,
    StepTransitionRecord,
    Task,
)
from starter.api.app import create_app
from starter.worker import journey_workers, running
from tests.api_support import admin
from tests.engine_support import events_named

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http_client(store: Store, ingest: Ingest, **options: Any) -> httpx.AsyncClient:
    app = create_app(store, ingest, settings=Settings(database_url=store.url), **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cairn.test",
                             auth=admin(app.state.store))


async def identify(api: httpx.AsyncClient, contact: str, **traits: Any) -> None:
    answer = await api.post("/v1/identify", json={"userId": contact, "traits": traits})
    assert answer.status_code == 202, answer.text


async def track(api: httpx.AsyncClient, event: str, *, at: datetime = T0,
                **who: str) -> None:
    answer = await api.post("/v1/track", json={"event": event, "timestamp": at.isoformat(),
                                               **who})
    assert answer.status_code == 202, answer.text


async def rows(store: Store, table: Any, contact_id: str) -> int:
    column = table.id if table is Contact else table.contact_id
    async with store.session() as session:
        return int(await session.scalar(
            select(func.count()).select_from(table).where(column == contact_id)) or 0)


# --------------------------------------------------------------------------- GET and PATCH


async def test_get_reads_the_contact_or_says_how_to_create_it(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/contacts/c-404")
    assert missing.status_code == 404
    assert "send a track or identify call" in missing.json()["detail"]

    await identify(api, "c-1", email="ana@example.com", first_name="Ana")
    found = await api.get("/v1/contacts/c-1")
    assert found.status_code == 200
    assert found.json()["email"] == "ana@example.com"
    assert found.json()["attributes"] == {"first_name": "Ana"}


async def test_patch_changes_channels_consent_per_channel_and_category_and_attributes(
    api: httpx.AsyncClient,
) -> None:
    await identify(api, "c-1", email="ana@example.com", plan="pro", first_name="Ana",
                   consent={"marketing": True})

    answer = await api.patch("/v1/contacts/c-1", json={
        "phone": "+40 721 000 000",
        "timezone": "Europe/Bucharest",
        "consent": {"email": {"marketing": False}, "sms": {"transactional": False}},
        "attributes": {"plan": None, "city": "Cluj"},
        "add_tags": ["vip"],
    })

    assert answer.status_code == 200, answer.text
    contact = ContactSnapshot.model_validate(answer.json())
    assert contact.phone == "+40721000000"
    assert contact.timezone == "Europe/Bucharest"
    assert contact.email == "ana@example.com"  # left out: unchanged
    assert contact.attributes == {"first_name": "Ana", "city": "Cluj"}
    assert contact.tags == ["vip"]
    assert contact.consent == {"marketing": True, "email": {"marketing": False},
                               "sms": {"transactional": False}}
    # What the preferences mean for sends: unsubscribed from marketing email only.
    assert reachability(contact, "email", "marketing").reason == "email: no marketing consent"
    assert reachability(contact, "email", "transactional").result
    assert reachability(contact, "sms", "marketing").result
    assert not reachability(contact, "sms", "transactional").result

    cleared = await api.patch("/v1/contacts/c-1", json={"email": None, "suppressed": ["sms"],
                                                         "remove_tags": ["vip"]})
    assert cleared.status_code == 200
    after = ContactSnapshot.model_validate(cleared.json())
    assert (after.email, after.suppressed, after.tags) == (None, ["sms"], [])
    assert (await api.get("/v1/contacts/c-1")).json()["suppressed"] == ["sms"]


async def test_patch_refuses_bad_fields_naming_each(api: httpx.AsyncClient) -> None:
    await identify(api, "c-1", email="ana@example.com")

    answer = await api.patch("/v1/contacts/c-1", json={
        "email": "not-an-address", "timezone": "Mars/Olympus",
        "consent": {"fax": True}, "suppressed": ["pigeon"], "favourite": 1,
    })

    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert any(e.startswith("body.email:") and "not a usable email" in e for e in errors)
    assert any(e.startswith("body.timezone:") and "Mars/Olympus" in e for e in errors)
    assert any(e.startswith("body.consent:") and "consent.fax" in e for e in errors)
    assert any(e.startswith("body.suppressed[0]:") for e in errors)
    assert any(e.startswith("body.favourite:") for e in errors)
    unchanged = (await api.get("/v1/contacts/c-1")).json()
    assert unchanged["email"] == "ana@example.com" and unchanged["timezone"] is None

    missing = await api.patch("/v1/contacts/c-404", json={"email": "x@example.com"})
    assert missing.status_code == 404


# --------------------------------------------------------------------------- alias


async def test_alias_moves_anonymous_events_and_merges_traits(
    api: httpx.AsyncClient, store: Store
) -> None:
    await track(api, "page_viewed", anonymousId="anon-1")
    await track(api, "cart_item_added", anonymousId="anon-1", at=T0 + timedelta(minutes=5))
    await api.post("/v1/identify", json={"anonymousId": "anon-1", "traits": {
        "email": "visitor@example.com", "utm_source": "ads", "plan": "free",
        "push_tokens": ["tok-anon"]}})
    await identify(api, "c-1", plan="pro", push_tokens=["tok-user"])
    await track(api, "cart_item_added", userId="c-1", at=T0 + timedelta(hours=1))

    answer = await api.post("/v1/alias", json={"previousId": "anon-1", "userId": "c-1",
                                               "messageId": "alias-1"})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"messageId": "alias-1", "duplicate": False, "userId": "c-1",
                             "eventsMoved": 3}
    async with store.session() as session:
        # has_done counts what the visitor did before signing up.
        assert await events_repo.count_events(session, "c-1", "cart_item_added") == 2
        assert await events_repo.count_events(session, "c-1", "page_viewed") == 1
        assert await events_repo.count_events(session, "anon-1", "page_viewed") == 0
        user = await contacts_repo.get_contact(session, "c-1")
        assert await contacts_repo.get_contact(session, "anon-1") is None
    assert user is not None and user.anonymous_id == "anon-1"
    contact = (await api.get("/v1/contacts/c-1")).json()
    assert contact["email"] == "visitor@example.com"  # a gap the visitor's traits fill
    assert contact["attributes"] == {"utm_source": "ads", "plan": "pro"}  # the user's value wins
    assert contact["push_tokens"] == ["tok-user", "tok-anon"]
    assert contact["first_seen_at"].startswith("2026-03-02T09:00:00")

    repeated = await api.post("/v1/alias", json={"previousId": "anon-1", "userId": "c-1",
                                                 "messageId": "alias-1"})
    assert repeated.json()["duplicate"] is True and repeated.json()["eventsMoved"] == 0


async def test_alias_adds_the_visitors_scores_and_refuses_an_id_aliased_to_itself(
    api: httpx.AsyncClient, store: Store
) -> None:
    async with store.session() as session, session.begin():
        for contact, points in (("anon-2", 15), ("c-2", 20)):
            await contacts_repo.ensure_contact(session, contact, T0)
            await scores_repo.change_score(
                session, contact_id=contact, dimension="global", delta=points,
                reason="visit", source="test", workflow_id=None,
                idempotency_key=f"score-{contact}", now=T0)

    answer = await api.post("/v1/alias", json={"previousId": "anon-2", "userId": "c-2"})
    assert answer.status_code == 200
    assert (await api.get("/v1/contacts/c-2")).json()["scores"] == {"global": 35}
    assert await rows(store, ScoreChangeRecord, "c-2") == 2

    itself = await api.post("/v1/alias", json={"previousId": "c-2", "userId": "c-2"})
    assert itself.status_code == 422
    assert "links two different ids" in itself.json()["detail"]
    missing = await api.post("/v1/alias", json={"userId": "c-2"})
    assert missing.status_code == 422
    assert any(e.startswith("body.previousId:") for e in missing.json()["errors"])


async def test_events_with_an_aliased_anonymous_id_go_to_the_user(store: Store) -> None:
    ingest = Ingest(store, None, attribute_changes=True)
    async with http_client(store, ingest) as api:
        async def send(path: str, body: dict[str, Any], minutes: int) -> None:
            answer = await api.post(path, json={
                **body, "timestamp": (T0 + timedelta(minutes=minutes)).isoformat()})
            assert answer.status_code == 202, answer.text

        await send("/v1/track", {"anonymousId": "anon-1", "event": "page_viewed"}, 0)
        await send("/v1/identify", {"userId": "u-1", "traits": {"email": "u@example.com"}}, 1)
        aliased = await api.post("/v1/alias", json={"previousId": "anon-1", "userId": "u-1"})
        assert aliased.status_code == 200, aliased.text
        # the browser has not learned the user id yet: only the anonymous id is sent
        await send("/v1/track", {"anonymousId": "anon-1", "event": "page_viewed"}, 2)
        await send("/v1/page", {"anonymousId": "anon-1", "name": "Pricing",
                                "properties": {"url": "https://shop.example/pricing"}}, 3)
        await send("/v1/identify", {"anonymousId": "anon-1", "traits": {"plan": "pro"}}, 4)
        answer = await api.post("/v1/batch", json={"batch": [
            {"type": "track", "anonymousId": "anon-1", "event": "page_viewed",
             "timestamp": (T0 + timedelta(minutes=5)).isoformat()}]})
        assert answer.status_code == 200, answer.text
        # an id never aliased is still a visitor of its own
        await send("/v1/track", {"anonymousId": "anon-2", "event": "page_viewed"}, 6)

    assert await rows(store, Contact, "anon-1") == 0
    async with store.session() as session:
        assert await events_repo.count_events(session, "u-1", "page_viewed") == 4
        assert await events_repo.count_events(session, "anon-1", "page_viewed") == 0
    assert await rows(store, Event, "anon-1") == 0
    async with store.session() as session:
        user = await contacts_repo.snapshot(session, "u-1")
    assert user is not None
    assert user.attributes["plan"] == "pro"
    [*_, last_change] = await events_named(store, "attribute_changed", "u-1")
    assert last_change.properties == {"attribute": "plan", "from": None, "to": "pro"}
    assert (user.first_seen_at, user.last_seen_at) == (T0, T0 + timedelta(minutes=5))
    assert await rows(store, Contact, "anon-2") == 1


async def test_the_latest_alias_of_an_anonymous_id_wins(store: Store) -> None:
    ingest = Ingest(store, None)
    async with http_client(store, ingest) as api:
        for user in ("u-1", "u-2"):
            answer = await api.post("/v1/alias", json={"previousId": "anon-9", "userId": user})
            assert answer.status_code == 200, answer.text
        answer = await api.post("/v1/track", json={"anonymousId": "anon-9", "event": "login"})
        assert answer.status_code == 202
        # a userId given beside the anonymous id is who the call is about
        answer = await api.post("/v1/track", json={
            "anonymousId": "anon-9", "userId": "u-1", "event": "login"})
        assert answer.status_code == 202
    async with store.session() as session:
        counts = [await events_repo.count_events(session, c, "login")
                  for c in ("u-1", "u-2", "anon-9")]
        first = await session.get(Contact, "u-1")
    assert counts == [1, 1, 0]
    assert first is not None and first.anonymous_id is None


# --------------------------------------------------------------------------- DELETE


async def seed_everything(store: Store, contact: str) -> None:
    """A row of every kind the erasure must remove."""
    async with store.session() as session, session.begin():
        await contacts_repo.identify(session, contact, {"email": f"{contact}@example.com"}, T0)
        await events_repo.record_event(
            session, message_id=unique("m"), type="track", contact_id=contact,
            name="cart_item_added", properties={}, timestamp=T0, received_at=T0)
        await deliveries_repo.record_delivery(
            session, idempotency_key=unique("d"), kind="send", contact_id=contact,
            channel="email", status="sent", rendered={}, created_at=T0)
        await scores_repo.change_score(
            session, contact_id=contact, dimension="global", delta=5, reason="r",
            source="test", workflow_id=None, idempotency_key=unique("s"), now=T0)
        await segments_repo.enter_segment(session, contact, "buyers", T0)
        await tasks_repo.create_task(
            session, idempotency_key=unique("t"), queue="sales", title="Call", note=None,
            contact_id=contact, journey_key=None, workflow_id=None, step=None, due_at=None,
            now=T0)
        session.add(StepTransitionRecord(
            journey_key="j", version=1, workflow_id=f"journey/j/{contact}",
            entry_id=unique("run"), contact_id=contact, entered_at=T0, seq=1, step="wait",
            visit=1, reached_at=T0))


async def test_delete_erases_every_trace_of_the_contact_and_only_of_it(
    api: httpx.AsyncClient, store: Store
) -> None:
    await seed_everything(store, "c-gone")
    await seed_everything(store, "c-kept")

    answer = await api.delete("/v1/contacts/c-gone")

    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["journeys_ended"] == [] and report["journeys_still_ending"] == []
    assert report["erased"] == {"contacts": 1, "events": 1, "deliveries": 1, "scores": 1,
                                "score_changes": 1, "memberships": 1, "tasks": 1, "entries": 0,
                                "inbox_messages": 0, "feedback": 0, "links": 0,
                                "rejected_calls": 0, "experiment_arms": 0,
                                "suppressions_kept_hashed": 0, "step_transitions": 1}
    for table in (Contact, Event, Delivery, Score, ScoreChangeRecord, SegmentMembership, Task,
                  StepTransitionRecord):
        assert await rows(store, table, "c-gone") == 0, table.__tablename__
        assert await rows(store, table, "c-kept") == 1, table.__tablename__
    assert (await api.get("/v1/contacts/c-gone")).status_code == 404
    assert (await api.delete("/v1/contacts/c-gone")).status_code == 404


async def test_delete_ends_running_journeys_first(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    key, contact = unique("erase"), unique("c")
    journey = Journey.model_validate({
        "key": key, "name": "Cart reminder", "trigger": {"event": "cart_item_added"},
        "steps": {"pause": {"wait": "3d", "next": "end"}},
    })
    async with store.session() as session, session.begin():
        await journeys_repo.publish(session, journey, source=None, now=T0)
    queue = unique("journeys")
    workers = journey_workers(temporal_env.client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery")
    async with running(workers):
        router = Router(temporal_env.client, store, task_queue=queue,
                        delivery_task_queue=f"{queue}-delivery")
        ingest = Ingest(store, router)
        wid = workflow_id(key, contact)
        async with http_client(store, Ingest(store, None)) as no_temporal:
            await track(no_temporal, "cart_item_added", userId=contact)
            assert (await ingest.route_events(
                [e.id for e in await _unrouted(store)])) != {}
            handle = temporal_env.client.get_workflow_handle(wid, result_type=JourneyResult)
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

            refused = await no_temporal.delete(f"/v1/contacts/{contact}")
            assert refused.status_code == 503
            assert "no Temporal connection" in refused.json()["detail"]
            assert await rows(store, Contact, contact) == 1

        async with http_client(store, ingest, temporal=temporal_env.client) as api:
            answer = await api.delete(f"/v1/contacts/{contact}")

        assert answer.status_code == 200, answer.text
        assert answer.json()["journeys_ended"] == [wid]
        assert answer.json()["journeys_terminated"] == []
        # It exited when asked, not terminated (this server's client is in clear; erasure under
        # the codec: tests/api/test_codec.py).
        result = await handle.result()
        assert result.outcome == "removed"
        state = await handle.query(STATE_QUERY, result_type=JourneyStateView)
        assert "contact erased" in state.path[-1].note
        for table in (Contact, Event, Entry):
            assert await rows(store, table, contact) == 0, table.__tablename__


async def _unrouted(store: Store) -> list[Event]:
    async with store.session() as session:
        return await events_repo.unrouted_events(session)


async def test_erasure_keeps_suppressions_as_keyed_hashes_and_no_trace_of_the_address(
    api: httpx.AsyncClient, store: Store,
) -> None:
    """A bounced address and a STOPped number outlive their erased contact as HMACs only: no
    table holds them any more, yet the same address given again is suppressed again."""
    await identify(api, "c-zoe", email="Zoe.Quist@Example.com", phone="+40 722 555 111",
                   last_name="Quistorius")
    async with store.session() as session, session.begin():
        await suppressions.suppress(session, "c-zoe", "email")
        await suppressions.suppress(session, "c-zoe", "sms")
        session.add(DeliveryFeedback(  # a report that named the address and found no contact
            dedupe_key=unique("f"), contact_id=None, provider="postmark", kind="bounced",
            channel="email", recipient="zoe.quist@example.com", permanent=True,
            detail={}, occurred_at=T0, received_at=T0))

    answer = await api.delete("/v1/contacts/c-zoe")
    assert answer.status_code == 200, answer.text
    assert answer.json()["erased"]["suppressions_kept_hashed"] == 2
    assert answer.json()["erased"]["feedback"] == 1

    traces = []
    async with store.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                text = " ".join(str(value) for value in row).lower()
                for needle in ("zoe.quist", "722 555 111", "722555111", "quistorius"):
                    if needle in text:
                        traces.append(f"{table.name}: {needle}")
        kept = (await session.execute(select(ErasedSuppression))).scalars().all()
    assert not traces, traces
    assert sorted(row.channel for row in kept) == ["email", "sms"]
    assert all(len(row.address_hash) == 64 for row in kept)

    # the same address and number, written differently, on a new contact
    await identify(api, "c-new", email=" zoe.quist@example.COM", phone="+40722555111")
    again = ContactSnapshot.model_validate((await api.get("/v1/contacts/c-new")).json())
    assert sorted(again.suppressed) == ["email", "sms"]  # not whatsapp: STOP was on sms
    await identify(api, "c-other", email="someone.else@example.com")
    other = ContactSnapshot.model_validate((await api.get("/v1/contacts/c-other")).json())
    assert other.suppressed == []
    # and by a PATCH of a contact that had another address
    await identify(api, "c-later", email="first@example.com")
    patched = await api.patch("/v1/contacts/c-later", json={"email": "ZOE.QUIST@example.com"})
    assert patched.status_code == 200, patched.text
    assert ContactSnapshot.model_validate(patched.json()).suppressed == ["email"]
