"""Runs that fail do not lock contacts out: their entries close as `failed` with the reason.

Two ways, both on the real Temporal test server: the interpreter closes its entry before failing
on its own error (a step whose activity fails for good), and the segment sweep's
`close_failed_entries` closes the entries of runs that ran no code at the end (terminated).
Either way `reentry: never` lets the contact in again.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from cairn.journey_run import EventMessage, workflow_id
from cairn.store.db import Store
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
