"""The router on the time-skipping server with the real interpreter, activities and SQLite store.

Every test publishes journeys under its own keys and runs its own workers on its own task queues,
because the server is shared by the whole session.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cairn import search_attributes
from cairn.events.ingest import Ingest
from cairn.events.router import RouteDecision
from cairn.journey_run import (
    EXIT_SIGNAL,
    EventMessage,
    ExitRequest,
    workflow_id,
)
from cairn.settings import Settings, get_settings
from cairn.store import entries as entries_repo
from cairn.store import events as events_repo
from cairn.store.db import Store
from starter.api.app import create_app
from starter.cli.catalog import current_step, exit_runs, step_counts
from starter.cli.main import app as cli_app
from tests.api_support import admin
from tests.engine_support import T0, engine, finished, publish, unique


def event(name: str, contact: str, at: datetime = T0, **properties: Any) -> EventMessage:
    return EventMessage(message_id=unique("m"), event=name, contact_id=contact,
                        properties=properties, timestamp=at)


async def entries(store: Store, journey_key: str, contact: str) -> list[Any]:
    async with store.session() as session:
        return list(await entries_repo.entries_for(session, journey_key, contact))


def only(decisions: list[RouteDecision], journey_key: str) -> RouteDecision:
    [decision] = [d for d in decisions if d.journey == journey_key]
    return decision


WAIT_A_DAY = {"pause": {"wait": "1d", "next": "end"}}
ENDS_AT_ONCE = {"bye": {"end": "done"}}


# --------------------------------------------------------------------------- triggers


async def test_trigger_filter_decides_who_enters(temporal_env: WorkflowEnvironment,
                                                 sqlite_store: Store) -> None:
    key, contact = unique("filter"), unique("c")
    journey = await publish(sqlite_store, {
        "key": key, "name": "Cart reminder", "trigger": {
            "event": "cart_item_added", "where": {"properties.value": {"gte": 20}}},
        "steps": WAIT_A_DAY,
    })
    async with engine(temporal_env, sqlite_store) as router:
        small = await router.route(event("cart_item_added", contact, value=10))
        big = await router.route(event("cart_item_added", contact, value=25))
        other = await router.route(event("page_viewed", contact))

        refused = only(small, key)
        assert refused.action == "refused"
        assert refused.reason.startswith("trigger.where: event properties.value: gte 20 failed")
        started = only(big, key)
        assert started.action == "started"
        assert started.workflow_id == workflow_id(key, contact)
        assert other == []

        description = await temporal_env.client.get_workflow_handle(started.workflow_id).describe()
        attributes = description.typed_search_attributes
        assert attributes.get(search_attributes.JOURNEY) == key
        assert attributes.get(search_attributes.CONTACT) == contact
        assert attributes.get(search_attributes.VERSION) == journey.version
        # The static summary is checked on the dev server (the test server does not keep it).
        [entry] = await entries(sqlite_store, key, contact)
        assert entry.workflow_id == started.workflow_id
        assert entry.ended_at is None


# --------------------------------------------------------------------------- entry rules


async def test_never_refuses_a_second_entry(temporal_env: WorkflowEnvironment,
                                            sqlite_store: Store) -> None:
    key, contact = unique("never"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Welcome", "trigger": {"event": "signup"},
                                 "entry": {"reentry": "never"}, "steps": ENDS_AT_ONCE})
    async with engine(temporal_env, sqlite_store) as router:
        first = only(await router.route(event("signup", contact)), key)
        assert first.action == "started"
        assert first.workflow_id is not None
        assert (await finished(temporal_env, first.workflow_id)).outcome == "ended:done"

        second = only(await router.route(event("signup", contact, T0 + timedelta(days=30))), key)

    assert second.action == "refused"
    assert second.reason.startswith("entry: never, entered at 2026-03-02T09:00:00")
    [entry] = await entries(sqlite_store, key, contact)
    assert entry.ended_at is not None


async def test_after_exit_signals_the_open_entry_then_enters_again(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    key, contact = unique("after-exit"), unique("c")
    await publish(sqlite_store, {
        "key": key, "name": "Cart", "trigger": {"event": "cart_item_added"},
        "entry": {"reentry": "after_exit"}, "steps": WAIT_A_DAY})
    async with engine(temporal_env, sqlite_store) as router:
        first = only(await router.route(event("cart_item_added", contact)), key)
        again = only(await router.route(event("cart_item_added", contact, T0 + timedelta(hours=1))),
                     key)

        assert first.action == "started"
        assert again.action == "signalled"
        assert again.workflow_id == first.workflow_id
        assert len(await entries(sqlite_store, key, contact)) == 1

        # The contact leaves (an exit ends the run as any goal would, without waiting a day).
        assert first.workflow_id is not None
        await temporal_env.client.get_workflow_handle(first.workflow_id).signal(
            EXIT_SIGNAL, ExitRequest(reason="left the shop"))
        await finished(temporal_env, first.workflow_id)
        later = only(await router.route(event("cart_item_added", contact, T0 + timedelta(days=2))),
                     key)

        assert later.action == "started"
        assert later.workflow_id == first.workflow_id
        rows = await entries(sqlite_store, key, contact)
        assert len(rows) == 2
        assert sum(row.ended_at is None for row in rows) == 1


async def test_concurrent_entries_are_keyed_by_the_event_field(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    key, contact = unique("orders"), unique("c")
    await publish(sqlite_store, {
        "key": key, "name": "Order follow-up", "trigger": {"event": "order_placed"},
        "entry": {"reentry": "concurrent", "key_by": "properties.order_id"},
        "steps": WAIT_A_DAY})
    async with engine(temporal_env, sqlite_store) as router:
        one = only(await router.route(event("order_placed", contact, order_id="o-1")), key)
        two = only(await router.route(event("order_placed", contact, order_id="o-2")), key)
        same = only(await router.route(event("order_placed", contact, order_id="o-1")), key)
        keyless = only(await router.route(event("order_placed", contact)), key)

        assert (one.action, two.action) == ("started", "started")
        assert one.workflow_id == workflow_id(key, contact, "o-1")
        assert two.workflow_id == workflow_id(key, contact, "o-2")
        for wid in (one.workflow_id, two.workflow_id):
            description = await temporal_env.client.get_workflow_handle(wid).describe()
            assert description.status == WorkflowExecutionStatus.RUNNING
        assert same.action == "signalled"
        assert same.workflow_id == one.workflow_id
        assert keyless.action == "refused"
        assert "properties.order_id" in keyless.reason
        rows = await entries(sqlite_store, key, contact)
        assert sorted(row.entry_key for row in rows) == ["o-1", "o-2"]


async def test_min_interval_refuses_entries_too_close_together(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    key, contact = unique("interval"), unique("c")
    await publish(sqlite_store, {
        "key": key, "name": "Browse", "trigger": {"event": "product_viewed"},
        "entry": {"reentry": "after_exit", "min_interval": "1d"}, "steps": ENDS_AT_ONCE})
    async with engine(temporal_env, sqlite_store) as router:
        first = only(await router.route(event("product_viewed", contact)), key)
        assert first.action == "started"
        assert first.workflow_id is not None
        await finished(temporal_env, first.workflow_id)

        soon = only(await router.route(event("product_viewed", contact, T0 + timedelta(hours=2))),
                    key)
        later = only(await router.route(event("product_viewed", contact, T0 + timedelta(hours=25))),
                     key)

    assert soon.action == "refused"
    assert soon.reason == "entry: min_interval 1d, last entered at 2026-03-02T09:00:00Z"
    assert later.action == "started"
    assert len(await entries(sqlite_store, key, contact)) == 2


async def test_routing_the_same_event_twice_enters_once(temporal_env: WorkflowEnvironment,
                                                        sqlite_store: Store) -> None:
    key, contact = unique("retry"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Retry", "trigger": {"event": "signup"},
                                 "entry": {"reentry": "never"}, "steps": WAIT_A_DAY})
    signup = event("signup", contact)
    async with engine(temporal_env, sqlite_store) as router:
        first = only(await router.route(signup), key)
        again = only(await router.route(signup), key)

    assert first.action == again.action == "started"
    assert again.reason == "already entered with this event"
    assert len(await entries(sqlite_store, key, contact)) == 1


async def test_an_entry_recorded_before_a_crash_is_started_when_routed_again(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    key, contact = unique("crash"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Crash", "trigger": {"event": "signup"},
                                 "entry": {"reentry": "never"}, "steps": WAIT_A_DAY})
    signup = event("signup", contact)
    # The router died after recording the entry and before starting its run.
    async with sqlite_store.session() as session, session.begin():
        await entries_repo.record_entry(
            session, journey_key=key, version=1, contact_id=contact, entry_key=None,
            workflow_id=workflow_id(key, contact), trigger_message_id=signup.message_id,
            entered_at=T0)
    async with engine(temporal_env, sqlite_store) as router:
        decision = only(await router.route(signup), key)

        assert decision.action == "started"
        description = await temporal_env.client.get_workflow_handle(
            workflow_id(key, contact)).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
    assert len(await entries(sqlite_store, key, contact)) == 1


# --------------------------------------------------------------------------- listening journeys


async def test_listening_journeys_hear_the_event(temporal_env: WorkflowEnvironment,
                                                 sqlite_store: Store) -> None:
    cart, idle, contact = unique("cart"), unique("idle"), unique("c")
    await publish(sqlite_store, {
        "key": cart, "name": "Cart", "trigger": {"event": "cart_item_added"},
        "exit": [{"event": "checkout_completed", "goal": "converted"}],
        "steps": {"wait_checkout": {"wait_for_event": {"event": "cart_item_added",
                                                       "timeout": "3d"},
                                    "then": "pause", "timeout_next": "end"},
                  **WAIT_A_DAY},
    })
    await publish(sqlite_store, {
        "key": idle, "name": "Idle", "trigger": {"event": "never_sent"},
        "exit": [{"event": "checkout_completed", "goal": "bought"}], "steps": WAIT_A_DAY,
    })
    async with engine(temporal_env, sqlite_store) as router:
        added = await router.route(event("cart_item_added", contact))
        # The run just started is not signalled a second time for its own trigger.
        assert [(d.journey, d.action) for d in added] == [(cart, "started")]

        checkout = await router.route(event("checkout_completed", contact, T0 + timedelta(hours=3)))

        heard = only(checkout, cart)
        assert heard.action == "signalled"
        assert heard.workflow_id == workflow_id(cart, contact)
        nobody = only(checkout, idle)
        assert (nobody.action, nobody.reason) == ("refused", "no running entry")
        result = await finished(temporal_env, workflow_id(cart, contact))
        assert result.outcome == "converted"


async def test_a_missing_workflow_is_not_an_error(temporal_env: WorkflowEnvironment,
                                                  sqlite_store: Store) -> None:
    key, contact = unique("stale"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Stale", "trigger": {"event": "signup"},
                                 "entry": {"reentry": "concurrent", "key_by": "plan"},
                                 "exit": [{"event": "cancelled", "goal": "lost"}],
                                 "steps": WAIT_A_DAY})
    stale = workflow_id(key, contact, "basic")
    async with sqlite_store.session() as session, session.begin():
        await entries_repo.record_entry(
            session, journey_key=key, version=1, contact_id=contact, entry_key="basic",
            workflow_id=stale, trigger_message_id="gone", entered_at=T0)
    async with engine(temporal_env, sqlite_store) as router:
        decisions = await router.route(event("cancelled", contact))

    assert [(d.workflow_id, d.action, d.reason) for d in decisions] == [
        (stale, "refused", "no running entry")]


# --------------------------------------------------------------------------- through the API


async def test_an_event_posted_to_the_api_starts_the_journey(temporal_env: WorkflowEnvironment,
                                                             sqlite_store: Store) -> None:
    key, contact = unique("api"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Welcome", "trigger": {"event": "signup"},
                                 "steps": WAIT_A_DAY})
    async with engine(temporal_env, sqlite_store) as router:
        app = create_app(sqlite_store, Ingest(sqlite_store, router),
                         settings=Settings(database_url=sqlite_store.url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test",
                                     auth=admin(app.state.store)) as client:
            response = await client.post("/v1/track", json={
                "userId": contact, "event": "signup", "messageId": f"{contact}-signup"})
        # The ASGI transport returns once the background routing has run.
        assert response.status_code == 202
        description = await temporal_env.client.get_workflow_handle(
            workflow_id(key, contact)).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING

    [entry] = await entries(sqlite_store, key, contact)
    assert entry.trigger_message_id == f"{contact}-signup"
    async with sqlite_store.session() as session:
        assert await events_repo.unrouted_events(session) == []


# --------------------------------------------------------------------------- operator commands


async def test_runs_shows_the_step_and_exit_removes_the_contact(
    temporal_env: WorkflowEnvironment, sqlite_store: Store
) -> None:
    key, staying, leaving = unique("ops"), unique("c"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Ops", "trigger": {"event": "signup"},
                                 "steps": WAIT_A_DAY})
    async with engine(temporal_env, sqlite_store) as router:
        for contact in (staying, leaving):
            assert only(await router.route(event("signup", contact)), key).action == "started"
        step, waiting, _until = await current_step(temporal_env.client,
                                                   workflow_id(key, leaving))
        assert step == "pause"
        assert waiting != "-"

        async with sqlite_store.session() as session:
            rows = await entries_repo.open_entries(session, key, leaving)
        never_ran = workflow_id(key, unique("nobody"))
        signalled, ended = await exit_runs(
            temporal_env.client, [*(row.workflow_id for row in rows), never_ran], "asked to stop")

        assert (signalled, ended) == (1, 1)
        result = await finished(temporal_env, workflow_id(key, leaving))
        assert result.outcome != "completed"
        description = await temporal_env.client.get_workflow_handle(
            workflow_id(key, staying)).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
    async with sqlite_store.session() as session:
        still_open = await entries_repo.open_entries(session, key)
    assert [row.contact_id for row in still_open] == [staying]



async def test_cli_lists_runs_per_step_and_removes_contacts_on_a_dev_server(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cairn journeys`, `runs` and `exit` against the real dev server (the test server has no
    visibility listing and keeps no static summaries)."""
    # The workers here decode with the clear converter the CLI must use too.
    monkeypatch.setenv("CAIRN_PAYLOAD_ENCRYPTION", "false")
    server = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
    )
    key, contacts = unique("cli"), [unique("c"), unique("c")]
    try:
        await publish(sqlite_store, {"key": key, "name": "Welcome", "trigger": {"event": "signup"},
                                     "steps": WAIT_A_DAY})
        async with engine(server, sqlite_store) as router:
            described: list[str] = []
            real_describe = WorkflowHandle.describe

            async def counting_describe(self: WorkflowHandle[Any, Any], **kw: Any) -> Any:
                described.append(self.id)
                return await real_describe(self, **kw)

            with pytest.MonkeyPatch.context() as patch:  # (monkeypatch.undo would undo the env)
                patch.setattr(WorkflowHandle, "describe", counting_describe)
                for contact in contacts:
                    decision = only(await router.route(event("signup", contact)), key)
                    assert decision.action == "started"
            # the dev server reports signal-with-start's `started`: the router trusts it
            assert described == []
            description = await server.client.get_workflow_handle(
                workflow_id(key, contacts[0])).describe()
            assert await description.static_summary() == f"Welcome for {contacts[0]}"

            async def counted() -> bool:
                return dict(await step_counts(server.client, key)) == {"pause": 2}

            await eventually(counted, "two runs listed at step pause")

            monkeypatch.setenv("CAIRN_DATABASE_URL", sqlite_store.url)
            monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS",
                               server.client.service_client.config.target_host)
            monkeypatch.setenv("COLUMNS", "250")
            get_settings.cache_clear()
            runner = CliRunner()
            try:
                listed = await asyncio.to_thread(runner.invoke, cli_app, ["journeys"])
                where = await asyncio.to_thread(runner.invoke, cli_app,
                                                ["runs", "--journey", key])
                removed = await asyncio.to_thread(
                    runner.invoke, cli_app,
                    ["exit", "--journey", key, "--contact", contacts[1], "--reason", "asked"])
                neither = await asyncio.to_thread(runner.invoke, cli_app,
                                                  ["exit", "--journey", key])
            finally:
                get_settings.cache_clear()

            assert listed.exit_code == 0, listed.output
            assert key in listed.output
            assert "pause: 2" in listed.output
            assert where.exit_code == 0, where.output
            assert where.output.count("pause") == 2
            assert removed.exit_code == 0, removed.output
            assert "1 run(s)" in removed.output
            result = await finished(server, workflow_id(key, contacts[1]))
            assert result.outcome != "completed"
            assert neither.exit_code == 1
            assert "--contact ID" in neither.output
    finally:
        await server.shutdown()


async def eventually(probe: Callable[[], Awaitable[bool]], what: str,
                     deadline_seconds: float = 30.0) -> None:
    """Poll until `probe` holds (visibility lags a run by a moment); fail naming `what`."""
    deadline = time.monotonic() + deadline_seconds
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"after {deadline_seconds:.0f}s still no {what}")
        await asyncio.sleep(0.2)
