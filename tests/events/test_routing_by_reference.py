"""Events reach journeys by reference: the router sends the stored event's identity and which of
the run's filtered waits and exit goals it meets, never its properties; `attribute_changed`
carries the names of the changed traits, never their values.

Against the real store, the real Ingest and Router, and the time-skipping server (per module).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.journey_run import STATE_QUERY, EventMessage, JourneyStateView
from cairn.store.db import Store
from tests.engine.test_history_privacy import leaks
from tests.engine_support import T0, engine, entries_of, finished, publish, unique


async def track(ingest: Ingest, contact: str, minutes: int, event: str,
                **properties: Any) -> None:
    await ingest.track(TrackCall(user_id=contact, event=event, properties=properties,
                                 timestamp=T0 + timedelta(minutes=minutes)), route=True)


async def step_of(handle: WorkflowHandle[Any, Any], wanted: str) -> JourneyStateView:
    for _ in range(100):
        state: JourneyStateView = await handle.query(STATE_QUERY, result_type=JourneyStateView)
        if state.current_step == wanted:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run never reached {wanted}: {state}")


async def test_filters_decided_by_the_router_and_no_property_in_the_history(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    key = unique("reviewed")
    await publish(store, {
        "key": key, "name": "Thanks for the review",
        "trigger": {"event": "purchase"},
        "exit": [{"event": "cancel", "where": {"properties.reason": {"eq": "fraud"}},
                  "goal": "cancelled"}],
        "start": "await_review",
        "steps": {
            "await_review": {"wait_for_event": {"event": "review", "timeout": "1d",
                                                "where": {"properties.stars": {"gte": 4}}},
                             "then": "thank", "timeout_next": "end"},
            "thank": {"score": {"add": 1, "dimension": "thanked"}, "next": "hold"},
            "hold": {"wait": "1d", "next": "end"},
        },
    })
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router)
        await track(ingest, "c-ref", 0, "purchase", order_id="Z-99",
                    shipping_address={"line1": "Strada Privata 77", "city": "Cluj"})
        [entry] = await entries_of(store, key)
        handle = temporal_env.client.get_workflow_handle(entry.workflow_id)
        await track(ingest, "c-ref", 1, "review", stars=2, text="Meh, signed Ioana Vasilescu")
        await track(ingest, "c-ref", 2, "review", stars=5, text="Loved it, Ioana Vasilescu")
        state = await step_of(handle, "hold")
        assert "got review" in state.path[0].note
        await track(ingest, "c-ref", 3, "cancel", reason="changed mind, call 0744123456")
        await track(ingest, "c-ref", 4, "cancel", reason="fraud")
        result = await finished(temporal_env, entry.workflow_id)
        assert result.outcome == "cancelled"

        history = await handle.fetch_history()
        start = history.events[0].workflow_execution_started_event_attributes
        trigger = (await temporal_env.client.data_converter.decode(start.input.payloads))[0]
        assert trigger["trigger"]["properties"] == {}
        assert trigger["trigger"]["event_id"] is not None
        found = leaks({entry.workflow_id: [history]}, {
            "Strada Privata 77", "Ioana Vasilescu", "Meh, signed", "changed mind", "0744123456"})
        assert found == []


async def test_attribute_changes_carry_names_not_values(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    key = unique("email-changed")
    await publish(store, {
        "key": key, "name": "New address",
        "trigger": {"attribute_changed": "email"},
        "entry": {"reentry": "concurrent", "key_by": "message_id"},
        "start": "check",
        "steps": {
            "check": {"if": {"property": "to", "contains": "@newmail"}, "then": "mark",
                      "else": "end"},
            "mark": {"score": {"add": 1, "dimension": "moved"}, "next": "end"},
        },
    })
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, attribute_changes=True)
        await ingest.identify(IdentifyCall(user_id="c-mail", traits={"email": "old@oldmail.org"},
                                           timestamp=T0))
        await ingest.identify(IdentifyCall(user_id="c-mail", traits={"email": "me@newmail.org"},
                                           timestamp=T0 + timedelta(minutes=1)))
        entries = sorted(await entries_of(store, key), key=lambda e: e.entered_at)
        assert len(entries) == 2
        outcomes = []
        for entry in entries:
            result = await finished(temporal_env, entry.workflow_id)
            outcomes.append(result.path[0].note)
            handle = temporal_env.client.get_workflow_handle(entry.workflow_id)
            history = await handle.fetch_history()
            start = history.events[0].workflow_execution_started_event_attributes
            decoded = (await temporal_env.client.data_converter.decode(start.input.payloads))[0]
            message = EventMessage.model_validate(decoded["trigger"])
            assert message.attributes == ["email"]
            assert message.properties == {}
            assert leaks({entry.workflow_id: [history]},
                         {"old@oldmail.org", "me@newmail.org"}) == []
        # The condition read the new value from the store, in its activity.
        assert outcomes[0].startswith("else") and outcomes[1].startswith("then")
