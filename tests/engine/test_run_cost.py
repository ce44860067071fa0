"""What one journey run costs Temporal: the lean sequence of commands (`workflows.run`).

A run the router starts waits at its first step (whose `CairnStep` the router set at start),
decides an `if` in a local activity, plans and sends in one `deliver_message`, which also closes
the entry when the send is the last step (`SendRequest.closes_entry`): one regular activity, one
local one, no search-attribute upsert.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from cairn import search_attributes
from cairn.journey_run import EventMessage, workflow_id
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery
from cairn.store.schema import StepTransitionRecord as StepTransition
from tests.engine_support import T0, engine, entries_of, finished, publish, unique

LOCAL_ACTIVITY_MARKER = "core_local_activity"


async def test_a_routed_run_waits_decides_and_sends_with_one_activity(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    key, contact = unique("lean"), unique("c")
    async with sqlite_store.session() as s, s.begin():
        await contacts_repo.identify(s, contact, {"email": f"{contact}@example.com",
                                                  "plan": "pro"}, T0)
    await publish(sqlite_store, {
        "key": key, "name": "Lean", "trigger": {"event": "go"},
        "templates": {"hi": {"email": {"subject": "Hi", "body": "Plan {{ contact.plan }}"}}},
        "steps": {
            "pause": {"wait": "1h", "next": "check"},
            "check": {"if": {"attribute": "plan", "eq": "pro"}, "then": "hello", "else": "end"},
            "hello": {"send": {"channel": "email", "template": "hi",
                               "category": "transactional"}, "next": "end"},
        },
    })
    async with engine(temporal_env, sqlite_store) as router:
        await router.route(EventMessage(message_id=unique("m"), event="go", contact_id=contact,
                                        properties={}, timestamp=T0))
        wid = workflow_id(key, contact)
        await temporal_env.sleep(timedelta(hours=2))
        result = await finished(temporal_env, wid)
        handle = temporal_env.client.get_workflow_handle(wid)
        history = await handle.fetch_history()
        description = await handle.describe()

    assert result.outcome == "completed"
    assert [entry.step for entry in result.path] == ["pause", "check", "hello"]
    kinds = [event.event_type for event in history.events]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled == ["deliver_message"]
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert markers == [LOCAL_ACTIVITY_MARKER]  # the if; the send closed the entry
    assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds
    assert kinds.count(EventType.EVENT_TYPE_TIMER_STARTED) == 1
    # the router's labels stand; the step is the one the run waited in
    assert description.typed_search_attributes.get(search_attributes.STEP) == "pause"
    async with sqlite_store.session() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.workflow_id == wid))).scalars()
        assert [(r.step, r.status, r.channel) for r in rows] == [("hello", "sent", "email")]
        (entry,) = await entries_of(sqlite_store, key)
        assert (entry.outcome, entry.ended_at is not None) == ("completed", True)
        left = (await s.execute(select(StepTransition.step, StepTransition.left_by,
                                       StepTransition.next_step)
                                .where(StepTransition.workflow_id == wid)
                                .order_by(StepTransition.seq))).all()
        assert [tuple(row) for row in left] == [("pause", "next", "check"),
                                                ("check", "then", "hello"),
                                                ("hello", "next", "end")]


# ------------------------------------------------------------------ scores read only when named


def test_reads_scores_is_yes_for_every_way_of_naming_them() -> None:
    from cairn.conditions import parse_condition
    from cairn.contact import reads_scores

    assert not reads_scores(parse_condition({"attribute": "plan", "eq": "pro"}))
    assert not reads_scores({"subject": "Hi {{ contact.first_name }}", "body": "{{ event.x }}"})
    assert reads_scores(parse_condition({"score": "lead", "gte": 10}))
    assert reads_scores(parse_condition({"in_segment": "vip"}))
    assert reads_scores(parse_condition({"attribute": "scores.lead", "gte": 1}))
    assert reads_scores(parse_condition({"any": [{"attribute": "plan", "eq": "pro"},
                                                 {"not": {"in_segment": "churned"}}]}))
    assert reads_scores({"body": "{{ contact.scores.global }}"})
    assert reads_scores({"body": "{% if contact.segments contains 'vip' %}VIP{% endif %}"})
    assert reads_scores({"body": "{{ contact | json }}"})  # the contact whole


async def test_a_run_reads_scores_only_where_its_condition_or_template_names_them(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    from cairn.store import scores as scores_repo
    from tests.events.test_routing_cost import Statements

    plain, scored, contact = unique("plain"), unique("scored"), unique("c")
    async with sqlite_store.session() as s, s.begin():
        await contacts_repo.identify(s, contact, {"email": f"{contact}@example.com",
                                                  "plan": "pro"}, T0)
        await scores_repo.change_score(s, contact_id=contact, dimension="lead", delta=12,
                                       reason="test", source="test", workflow_id=None,
                                       idempotency_key=None, now=T0)
    for key, condition, body in (
        (plain, {"attribute": "plan", "eq": "pro"}, "Plan {{ contact.plan }}"),
        (scored, {"score": "lead", "gte": 10}, "Lead {{ contact.scores.lead }}"),
    ):
        await publish(sqlite_store, {
            "key": key, "name": key, "trigger": {"event": f"go-{key}"},
            "templates": {"hi": {"email": {"subject": "Hi", "body": body}}},
            "steps": {
                "check": {"if": condition, "then": "hello", "else": "end"},
                "hello": {"send": {"channel": "email", "template": "hi",
                                   "category": "transactional"}, "next": "end"},
            },
        })
    counted = Statements(sqlite_store)
    reads: dict[str, int] = {}
    try:
        async with engine(temporal_env, sqlite_store) as router:
            for key in (plain, scored):
                before = counted.count("SELECT ? AS kind, scores.dim")
                await router.route(EventMessage(message_id=unique("m"), event=f"go-{key}",
                                                contact_id=contact, properties={},
                                                timestamp=T0))
                result = await finished(temporal_env, workflow_id(key, contact))
                assert result.outcome == "completed"
                assert [entry.step for entry in result.path] == ["check", "hello"]
                reads[key] = counted.count("SELECT ? AS kind, scores.dim") - before
    finally:
        counted.close()
    # the plain run's `if` and send never asked for scores; the scored one's both did
    assert reads == {plain: 0, scored: 2}
    async with sqlite_store.session() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.contact_id == contact)
                                .order_by(Delivery.id))).scalars().all()
    assert [(r.journey_key, (r.rendered or {}).get("body")) for r in rows] == [
        (plain, "Plan pro"), (scored, "Lead 12")]


async def test_a_last_send_that_does_not_go_leaves_the_entry_to_finish_entry(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    """Only a send settled `sent` closes the entry with its ledger row; a skipped one (no
    address) ends the run as before, `finish_entry` closing the entry, `completed` all the same."""
    key, contact = unique("skip"), unique("c")
    async with sqlite_store.session() as s, s.begin():
        await contacts_repo.identify(s, contact, {"plan": "pro"}, T0)  # no email address
    await publish(sqlite_store, {
        "key": key, "name": "Skip", "trigger": {"event": "go"},
        "templates": {"hi": {"email": {"subject": "Hi", "body": "Hello"}}},
        "steps": {"hello": {"send": {"channel": "email", "template": "hi",
                                     "category": "transactional"}, "next": "end"}},
    })
    async with engine(temporal_env, sqlite_store) as router:
        await router.route(EventMessage(message_id=unique("m"), event="go", contact_id=contact,
                                        properties={}, timestamp=T0))
        wid = workflow_id(key, contact)
        result = await finished(temporal_env, wid)
        history = await temporal_env.client.get_workflow_handle(wid).fetch_history()
    assert result.outcome == "completed"
    assert "skipped" in result.path[-1].note
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert markers == [LOCAL_ACTIVITY_MARKER]  # finish_entry
    (entry,) = await entries_of(sqlite_store, key)
    assert (entry.outcome, entry.ended_at is not None) == ("completed", True)


async def test_a_trigger_that_finds_the_entry_closed_but_its_run_ending_enters_next(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    """A last send closes the entry a moment before its run completes; a trigger in that moment
    finds no open entry yet reaches the ending run. The router waits for that run to end and
    starts the contact's next run with the event (here the entry of a run about to end its 1 s
    wait is closed by hand)."""
    from sqlalchemy import update

    from cairn.store.schema import Entry

    key, contact = unique("again"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Again", "trigger": {"event": "go"},
                                 "steps": {"pause": {"wait": "1s", "next": "end"}}})
    wid = workflow_id(key, contact)
    async with engine(temporal_env, sqlite_store) as router:
        now = datetime.now(UTC)
        first = await router.route(EventMessage(message_id=unique("m"), event="go",
                                                contact_id=contact, properties={}, timestamp=now))
        assert [d.action for d in first] == ["started"]
        first_run = (await temporal_env.client.get_workflow_handle(wid).describe()).run_id
        async with sqlite_store.session() as s, s.begin():
            await s.execute(update(Entry).where(Entry.journey_key == key)
                            .values(ended_at=now, outcome="completed"))
        second_id = unique("m")
        second = await router.route(EventMessage(message_id=second_id, event="go",
                                                 contact_id=contact, properties={},
                                                 timestamp=now))
        assert [d.action for d in second] == ["started"], second
        latest = await temporal_env.client.get_workflow_handle(wid).describe()
        assert latest.run_id != first_run
        assert (await latest.memo()).get("cairn_trigger") == second_id
        # the second event did reach the ending run first (the path under test)
        history = await temporal_env.client.get_workflow_handle(
            wid, run_id=first_run).fetch_history()
        signals = [e for e in history.events
                   if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
        assert len(signals) == 2
    entries = await entries_of(sqlite_store, key)
    assert [e.trigger_message_id == second_id for e in entries] == [False, True]
