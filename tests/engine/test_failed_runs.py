"""Runs that fail do not lock contacts out: their entries close as `failed` with the reason.

Two ways, both on the real Temporal test server: the interpreter closes its entry before failing
on its own error (a step whose activity fails for good), and the segment sweep's
`close_failed_entries` closes the entries of runs that ran no code at the end (terminated).
Either way `reentry: never` lets the contact in again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from cairn.contact import ContactSnapshot
from cairn.events.router import TRIGGER_MEMO
from cairn.failed_runs import close_failed_runs
from cairn.journey_run import EventMessage, workflow_id
from cairn.store import contacts
from cairn.store.db import Store
from cairn.store.schema import Contact
from tests.engine_support import engine, entries_of, publish, unique

ASK_THE_CONTACT = {
    "check": {"if": {"reachable": {"channel": "push", "category": "transactional"}},
              "then": "end", "else": "end"},
}


def trigger(message_id: str, contact: str) -> EventMessage:
    return EventMessage(message_id=message_id, event="go", contact_id=contact, properties={},
                        timestamp=datetime.now(UTC))


async def test_a_run_whose_step_fails_closes_its_entry_failed_and_never_admits_again(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key = unique("broken")
    await publish(store, {"key": key, "name": "Broken", "trigger": {"event": "go"},
                          "entry": {"reentry": "never"}, "start": "check",
                          "steps": ASK_THE_CONTACT})
    ghost = unique("ghost")  # no such contact: the condition's activity fails for good
    async with engine(temporal_env, store) as router:
        [first] = await router.route(trigger("go-1", ghost))
        assert first.action == "started"
        with pytest.raises(WorkflowFailureError):
            await temporal_env.client.get_workflow_handle(workflow_id(key, ghost)).result()

        [entry] = await entries_of(store, key)
        assert entry.outcome == "failed" and entry.ended_at is not None
        assert entry.reason is not None and entry.reason.startswith("step check:")
        assert "ContactNotFound" in entry.reason or "no contact" in entry.reason

        [again] = await router.route(trigger("go-2", ghost))
        assert again.action == "started", again.reason  # the failed entry does not count
        with pytest.raises(WorkflowFailureError):
            await temporal_env.client.get_workflow_handle(workflow_id(key, ghost)).result()
    assert [e.outcome for e in await entries_of(store, key)] == ["failed", "failed"]


# --------------------------------------------------------------------------- across continue-as-new

DAILY_CHECK = {
    "day": {"wait": "1d", "next": "check"},
    "check": {"if": {"reachable": {"channel": "push", "category": "transactional"}},
              "then": "day", "else": "day"},
}
"""A loop that reads the contact once a day: each run continues as new when it comes back to
`day`, so after a day the entry's run is the second of its workflow."""


async def continued_run(env: WorkflowEnvironment, wid: str) -> str:
    """Let a day and an hour pass on the test server; the id of the run that continued the first
    (once there is one)."""
    handle = env.client.get_workflow_handle(wid)
    first = (await handle.describe()).run_id
    await env.sleep(timedelta(days=1, hours=1))
    for _ in range(200):
        described = await handle.describe()
        if described.run_id != first and described.status == WorkflowExecutionStatus.RUNNING:
            assert described.run_id is not None
            return described.run_id
        await asyncio.sleep(0.05)
    raise AssertionError("the run never continued as new")


async def published_daily_check(store: Store) -> tuple[str, str, str]:
    """The daily check journey published (`never` re-entered), a contact, its run's id."""
    key = unique("daily")
    await publish(store, {"key": key, "name": "Daily check", "trigger": {"event": "go"},
                          "entry": {"reentry": "never"}, "start": "day", "steps": DAILY_CHECK})
    contact = unique("c")
    await add_contact(store, contact)
    return key, contact, workflow_id(key, contact)


async def test_a_run_that_fails_after_continuing_as_new_closes_its_entry_failed(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key, contact, wid = await published_daily_check(store)
    async with engine(temporal_env, store) as router:
        [started] = await router.route(trigger("go-1", contact))
        assert started.action == "started"
        second = await continued_run(temporal_env, wid)
        await remove_contact(store, contact)  # the next check fails for good

        await temporal_env.sleep(timedelta(days=1, hours=1))
        described = await temporal_env.client.get_workflow_handle(wid).describe()
        assert (described.run_id, described.status) == (second, WorkflowExecutionStatus.FAILED)

        [entry] = await entries_of(store, key)
        assert entry.outcome == "failed" and entry.ended_at is not None
        assert entry.reason is not None and entry.reason.startswith("step check:")
        [again] = await router.route(trigger("go-2", contact))
        assert again.action == "started", again.reason  # the failed entry does not count


async def test_a_run_terminated_after_continuing_as_new_is_closed_failed_by_the_check(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key, contact, wid = await published_daily_check(store)
    async with engine(temporal_env, store) as router:
        [started] = await router.route(trigger("go-1", contact))
        assert started.action == "started"
        second = await continued_run(temporal_env, wid)
        # The continued run still names the entry's trigger (the memo is carried over).
        memo = await (await temporal_env.client.get_workflow_handle(
            wid, run_id=second).describe()).memo()
        assert memo.get(TRIGGER_MEMO) == "go-1"
        await temporal_env.client.get_workflow_handle(wid).terminate(reason="stuck on an outage")

        closed = await close_failed_runs(store, temporal_env.client,
                                         now=datetime.now(UTC) + timedelta(minutes=1))

        [entry] = await entries_of(store, key)
        assert [c.entry_id for c in closed] == [entry.id]
        assert entry.outcome == "failed" and entry.ended_at is not None
        assert entry.reason is not None and entry.reason.startswith("run terminated")
        assert "stuck on an outage" in entry.reason
        [again] = await router.route(trigger("go-2", contact))
        assert again.action == "started", again.reason


async def add_contact(store: Store, contact: str) -> None:
    async with store.session() as session, session.begin():
        await contacts.create_contact(session, ContactSnapshot(id=contact, timezone="UTC"),
                                      datetime.now(UTC))


async def remove_contact(store: Store, contact: str) -> None:
    async with store.session() as session, session.begin():
        await session.execute(delete(Contact).where(Contact.id == contact))
