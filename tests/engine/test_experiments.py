"""Experiments on real runs (time-skipping server, real store): arms per contact, recorded in the
ledger and the path; an automatic winner that switches later entrants, never before min_per_arm."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from cairn.arms import variant_for
from cairn.contact import ContactSnapshot
from cairn.journey import Journey
from cairn.journey_run import EVENT_SIGNAL, EventMessage, JourneyInput, JourneyResult, workflow_id
from cairn.reports import journey_report
from cairn.store import contacts
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery, Event, ExperimentAssignment, ExperimentDecision
from starter.worker import journey_workers, running, workflow_runner
from workflows import WORKFLOWS

MIN_PER_ARM = 4


def definition(key: str, **experiment: Any) -> dict[str, Any]:
    return {
        "key": key, "name": "Copy test", "trigger": {"event": "go"},
        "exit": [{"event": "bought", "goal": "converted"}],
        "steps": {"offer": {"send": {
            "channel": "email", "category": "transactional",
            "variants": [{"template": "copy-a", "weight": 50, "name": "a"},
                         {"template": "copy-b", "weight": 50, "name": "b"}],
            "experiment": {"metric": {"event": "bought"}, "within": "1d",
                           "min_per_arm": MIN_PER_ARM, "confidence": 0.95, **experiment}},
            "next": "end"}},
        "templates": {"copy-a": {"email": {"subject": "A", "body": "Plain copy"}},
                      "copy-b": {"email": {"subject": "B", "body": "Better copy"}}},
    }


@pytest_asyncio.fixture
async def engine(
    temporal_env: WorkflowEnvironment, db_url: str,
) -> AsyncIterator[tuple[Client, Store, str]]:
    store = await Store.open(db_url)
    queue = f"exp-{uuid.uuid4().hex[:8]}-journeys"
    workers = journey_workers(temporal_env.client, store, journey_queue=queue,
                              delivery_queue=queue.replace("journeys", "delivery"))
    async with running(workers):
        yield temporal_env.client, store, queue
    await store.close()


async def enter(client: Client, store: Store, queue: str, journey: Journey,
                contact: str) -> JourneyResult:
    async with store.session() as s, s.begin():
        await contacts.create_contact(
            s, ContactSnapshot(id=contact, email=f"{contact}@example.com", timezone="UTC"),
            datetime.now(UTC))
    trigger = EventMessage(message_id=f"go-{contact}", event="go", contact_id=contact,
                           properties={}, timestamp=datetime.now(UTC))
    handle = await client.start_workflow(
        "JourneyWorkflow",
        JourneyInput(journey=journey, contact_id=contact, trigger=trigger, lean=True),
        id=workflow_id(journey.key, contact), task_queue=queue, start_signal=EVENT_SIGNAL,
        start_signal_args=[trigger], result_type=JourneyResult)
    result: JourneyResult = await handle.result()
    return result


async def sent_row(store: Store, contact: str) -> Delivery:
    async with store.session() as s:
        row = (await s.execute(select(Delivery).where(Delivery.contact_id == contact))).scalar()
    assert row is not None
    return row


async def buy(store: Store, row: Delivery) -> None:
    assert row.sent_at is not None and row.contact_id is not None
    at = row.sent_at + timedelta(hours=1)
    async with store.session() as s, s.begin():
        s.add(Event(message_id=f"bought-{row.contact_id}", type="track",
                    contact_id=row.contact_id, name="bought", properties={}, timestamp=at,
                    received_at=at))


async def publish(store: Store, data: dict[str, Any]) -> Journey:
    journey = Journey.model_validate(data)
    async with store.session() as s, s.begin():
        row, _ = await journeys_repo.publish(s, journey, source=None, now=datetime.now(UTC))
    return journeys_repo.journey_of(row)


def contacts_for(journey: Journey, arm: str, n: int, prefix: str) -> list[str]:
    step = journey.steps["offer"]
    found = []
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        if variant_for(step.send, journey.key, "offer", candidate).arm == arm:  # type: ignore[attr-defined]
            found.append(candidate)
            if len(found) == n:
                return found
    raise AssertionError("not enough contacts in the arm")


async def test_the_winner_takes_over_after_min_per_arm_and_not_before(
    engine: tuple[Client, Store, str],
) -> None:
    client, store, queue = engine
    journey = await publish(store, definition(f"copy-{uuid.uuid4().hex[:6]}", then="winner"))
    a_side = contacts_for(journey, "a", MIN_PER_ARM + 3, "a")
    b_side = contacts_for(journey, "b", MIN_PER_ARM, "b")
    # b converts every time, a never; one arm short of min_per_arm decides nothing
    for contact in b_side + a_side[:MIN_PER_ARM - 1]:
        result = await enter(client, store, queue, journey, contact)
        row = await sent_row(store, contact)
        assert row.variant == ("b" if contact in b_side else "a")
        assert f"(variant {row.variant})" in result.path[-1].note
        if row.variant == "b":
            await buy(store, row)
    async with store.session() as s:
        assert (await s.execute(select(ExperimentDecision))).scalar() is None
    # the fourth a-contact completes the arms: its send is still a, and decides the experiment
    await enter(client, store, queue, journey, a_side[MIN_PER_ARM - 1])
    assert (await sent_row(store, a_side[MIN_PER_ARM - 1])).variant == "a"
    async with store.session() as s:
        decision = (await s.execute(select(ExperimentDecision))).scalar()
    assert decision is not None and decision.winner == "b"
    assert {f["name"]: f["contacts"] for f in decision.figures} == {"a": 4, "b": 4}
    assert "beats every other arm" in decision.reason
    # later a-side contacts get the winner
    for contact in a_side[MIN_PER_ARM:]:
        await enter(client, store, queue, journey, contact)
        row = await sent_row(store, contact)
        assert (row.variant, row.template) == ("b", "copy-b")
        assert row.rendered["subject"] == "B"
    report = await journey_report(store, journey.key)
    [experiment] = report.experiments
    assert experiment.decision is not None and experiment.decision.winner == "b"
    assert experiment.status.startswith("decided: b")
    arms = {arm.name: arm for arm in experiment.arms}
    assert (arms["a"].contacts, arms["a"].conversions) == (4, 0)
    assert (arms["b"].contacts, arms["b"].conversions) == (7, 4)
    assert arms["a"].control and arms["b"].uplift is None  # a control rate of 0: no uplift
    assert {m.variant for m in report.messages} == {"a", "b"}
    # runs before and after the decision replay: the winner came in an activity's result
    for contact in (a_side[0], a_side[-1]):
        await replays(client, workflow_id(journey.key, contact))


async def replays(client: Client, wid: str) -> None:
    history = await client.get_workflow_handle(wid).fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=client.data_converter,
                        workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_without_then_winner_the_arms_stay_by_bucket(
    engine: tuple[Client, Store, str],
) -> None:
    client, store, queue = engine
    journey = await publish(store, definition(f"copy-{uuid.uuid4().hex[:6]}"))
    b_side = contacts_for(journey, "b", MIN_PER_ARM, "b")
    a_side = contacts_for(journey, "a", MIN_PER_ARM + 1, "a")
    for contact in b_side + a_side:
        await enter(client, store, queue, journey, contact)
        row = await sent_row(store, contact)
        if row.variant == "b":
            await buy(store, row)
    for contact in a_side:
        assert (await sent_row(store, contact)).variant == "a"
    async with store.session() as s:
        assert (await s.execute(select(ExperimentDecision))).scalar() is None
    [experiment] = (await journey_report(store, journey.key)).experiments
    assert experiment.status.startswith("measuring: b would win")


async def test_a_split_experiment_records_arms_and_switches_paths(
    engine: tuple[Client, Store, str],
) -> None:
    client, store, queue = engine
    key = f"split-{uuid.uuid4().hex[:6]}"
    journey = await publish(store, {
        "key": key, "name": "Split test", "trigger": {"event": "go"},
        "exit": [{"event": "bought", "goal": "converted"}],
        "steps": {
            "ab": {"split": {"paths": [{"percent": 50, "next": "left", "name": "left"},
                                       {"percent": 50, "next": "right", "name": "right"}],
                             "experiment": {"metric": {"goal": "converted"}, "within": "1d",
                                            "min_per_arm": 3, "then": "winner"}}},
            "left": {"end": "left"}, "right": {"end": "right"}},
    })
    from cairn.arms import bucket, split_arm

    def arm_of(contact: str) -> str:
        return split_arm(journey.steps["ab"].split, bucket(key, "ab", contact))[0]  # type: ignore[attr-defined]

    names = [f"s-{i}" for i in range(200)]
    lefts = [c for c in names if arm_of(c) == "left"][:4]
    rights = [c for c in names if arm_of(c) == "right"][:3]
    for contact in rights + lefts[:3]:
        result = await enter(client, store, queue, journey, contact)
        assert result.outcome == f"ended:{arm_of(contact)}"
        if arm_of(contact) == "right":
            async with store.session() as s:
                at = (await s.execute(select(ExperimentAssignment.assigned_at).where(
                    ExperimentAssignment.contact_id == contact))).scalar_one()
            async with store.session() as s, s.begin():
                s.add(Event(message_id=f"bought-{contact}", type="track", contact_id=contact,
                            name="bought", properties={}, timestamp=at + timedelta(minutes=5),
                            received_at=at))
    # the next left contact's choose_arm decides (right 3/3, left 0/3) and gets right
    late = await enter(client, store, queue, journey, lefts[3])
    assert late.outcome == "ended:right"
    assert "winner since" in late.path[0].note
    await replays(client, workflow_id(key, lefts[3]))
    [experiment] = (await journey_report(store, key)).experiments
    assert experiment.kind == "split" and experiment.decision is not None
    assert experiment.decision.winner == "right"
