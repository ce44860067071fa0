"""Step transitions: what the runs record of each step visit, written by the activities they
call anyway, on the time-skipping server with the real interpreter, activities and store."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from cairn import metrics
from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.journey_run import workflow_id
from cairn.reports import journey_report
from cairn.store.db import Store
from cairn.store.schema import StepTransitionRecord
from tests.engine_support import engine, finished, publish

KEY = "trial-nudge"
DEFINITION: dict[str, Any] = {
    "key": KEY, "name": "Nudge trials",
    "trigger": {"event": "trial_started"},
    "exit": [{"event": "trial_cancelled", "goal": "cancelled"}],
    "steps": {
        "score_up": {"score": {"add": 5}, "next": "wait_1h"},
        "wait_1h": {"wait": "1h", "next": "check"},
        "check": {"if": {"attribute": "plan", "eq": "pro"}, "then": "end",
                  "else": "wait_for_buy"},
        "wait_for_buy": {"wait_for_event": {"event": "bought", "timeout": "1d"},
                         "then": "end", "timeout_next": "end"},
    },
}
PLANS = {"pro": "pro", "buys": "free", "idles": "free", "cancels": "free"}


def written(metric_value: Any) -> float:
    return float(metric_value._value.get())


async def test_each_visit_is_recorded_with_the_route_it_left_by(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    store = sqlite_store
    await publish(store, DEFINITION)
    start = await temporal_env.get_current_time()
    clock: dict[str, datetime] = {"now": start}
    before = written(metrics.STEP_TRANSITIONS.labels(journey=KEY))
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, clock=lambda: clock["now"])
        for name, plan in PLANS.items():
            await ingest.identify(IdentifyCall(user_id=name, traits={"plan": plan}))
            await ingest.track(TrackCall(user_id=name, event="trial_started"))
        await temporal_env.sleep(timedelta(minutes=30))

        # The score step's activity wrote its visit and, in advance, that it leaves by `next`:
        # everyone shows waiting in `wait_1h`, where no activity writes.
        steps = {s.step: s for s in (await journey_report(store, KEY)).steps}
        assert (steps["score_up"].reached, steps["score_up"].waiting) == (4, 0)
        assert steps["score_up"].left == {"next": 4}
        assert (steps["wait_1h"].reached, steps["wait_1h"].waiting) == (4, 4)

        await temporal_env.sleep(timedelta(hours=1))
        clock["now"] = await temporal_env.get_current_time()
        await ingest.track(TrackCall(user_id="buys", event="bought"))
        await ingest.track(TrackCall(user_id="cancels", event="trial_cancelled"))
        await temporal_env.sleep(timedelta(days=2))
        outcomes = {name: (await finished(temporal_env, workflow_id(KEY, name))).outcome
                    for name in PLANS}
    assert outcomes == {"pro": "completed", "buys": "completed", "idles": "completed",
                        "cancels": "cancelled"}

    report = await journey_report(store, KEY)
    steps = {s.step: (s.reached, s.waiting, s.left, s.exited) for s in report.steps}
    assert steps == {
        "score_up": (4, 0, {"next": 4}, {}),
        "wait_1h": (4, 0, {"next": 4}, {}),
        "check": (4, 0, {"then": 1, "else": 3}, {}),
        "wait_for_buy": (3, 0, {"then": 1, "timeout_next": 1}, {"cancelled": 1}),
    }
    async with store.session() as s:
        rows = (await s.scalars(select(StepTransitionRecord).where(
            StepTransitionRecord.contact_id == "pro").order_by(StepTransitionRecord.seq))).all()
    # `pro` called no activity after `check`: the end of its run wrote check's exit
    assert [(r.seq, r.step, r.visit, r.left_by, r.next_step) for r in rows] == [
        (1, "score_up", 1, "next", "wait_1h"), (2, "wait_1h", 1, "next", "check"),
        (3, "check", 1, "then", "end")]
    assert all(r.entry_id and r.version == 1 for r in rows)
    assert written(metrics.STEP_TRANSITIONS.labels(journey=KEY)) - before >= 4 * 3


async def test_a_run_with_no_activity_but_its_end_writes_its_steps(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    store = sqlite_store
    key = "just-wait"
    await publish(store, {"key": key, "name": "Just wait", "trigger": {"event": "go"},
                          "steps": {"pause": {"wait": "2h", "next": "done"},
                                    "done": {"end": {"outcome": "waited"}}}})
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router)
        await ingest.track(TrackCall(user_id="c-1", event="go"))
        await temporal_env.sleep(timedelta(hours=1))
        async with store.session() as s:
            assert (await s.scalars(select(StepTransitionRecord))).all() == []
        steps = {s.step: (s.reached, s.waiting) for s in (await journey_report(store, key)).steps}
        assert steps == {"pause": (1, 1), "done": (0, 0)}
        await temporal_env.sleep(timedelta(hours=2))
        assert (await finished(temporal_env, workflow_id(key, "c-1"))).outcome == "ended:waited"
    report = await journey_report(store, key)
    steps = {s.step: (s.reached, s.waiting, s.left) for s in report.steps}
    assert steps == {"pause": (1, 0, {"next": 1}), "done": (1, 0, {"end": 1})}
