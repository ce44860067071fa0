"""The report's experiments from stored sends, feedback, split arms and events, against worked
examples: the same counts as tests/analytics/test_statistics.py give the same figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cairn.experiments import Site, arms_key, decision_of, take_decision
from cairn.reports import journey_report
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import (
    Delivery,
    DeliveryFeedback,
    Entry,
    Event,
    ExperimentAssignment,
    ExperimentDecision,
)
from tests.engine_support import publish

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = "cart-abandonment"
DEFINITION: dict[str, Any] = {
    "key": KEY, "name": "Reduce cart abandonment", "trigger": {"event": "cart_item_added"},
    "exit": [{"event": "checkout_completed", "goal": "converted"}],
    "start": "ab",
    "steps": {
        "ab": {"split": {"holdout": 20, "paths": [{"percent": 80, "next": "email_reminder",
                                                    "name": "remind"}],
                         "experiment": {"metric": {"goal": "converted"}, "within": "3d"}}},
        "email_reminder": {"send": {
            "channel": "email",
            "variants": [{"template": "cart-reminder", "name": "control"},
                         {"template": "cart-reminder-urgent", "name": "urgent"}],
            "experiment": {"metric": "clicks", "min_per_arm": 100, "then": "winner"}},
            "next": "end"},
    },
}


def send(n: int, variant: str, template: str) -> Delivery:
    at = T0 + timedelta(hours=2)
    return Delivery(idempotency_key=f"journey/{KEY}/c-{n}/email_reminder/1", kind="send",
                    workflow_id=f"journey/{KEY}/c-{n}", journey_key=KEY, step="email_reminder",
                    contact_id=f"c-{n}", channel="email", provider="outbox", template=template,
                    variant=variant, category="marketing", status="sent", rendered={},
                    created_at=at, sent_at=at, planned_at=at)


def clicked(n: int, delivery: Delivery) -> DeliveryFeedback:
    at = T0 + timedelta(hours=3)
    return DeliveryFeedback(dedupe_key=f"click/{n}", delivery_id=delivery.id,
                            contact_id=f"c-{n}", provider="outbox", kind="clicked",
                            channel="email", detail={}, occurred_at=at, received_at=at)


async def add(store: Store, *rows: Any) -> list[Any]:
    async with store.session() as s, s.begin():
        s.add_all(rows)
        await s.flush()
        return list(rows)


async def test_variant_arms_count_clicks_with_the_textbook_figures(store: Store) -> None:
    await publish(store, DEFINITION)
    # 18 of 115 clicked the control, 7 of 105 the urgent copy (the smokers' exercise)
    control = await add(store, *(send(n, "control", "cart-reminder") for n in range(115)))
    urgent = await add(store, *(send(1000 + n, "urgent", "cart-reminder-urgent")
                                for n in range(105)))
    await add(store, *(clicked(n, control[n]) for n in range(18)),
              *(clicked(1000 + n, urgent[n]) for n in range(7)),
              clicked(5000, urgent[50]))  # a second click of one message counts once
    await add(store, DeliveryFeedback(
        dedupe_key="click/again", delivery_id=urgent[0].id, contact_id="c-1000",
        provider="outbox", kind="clicked", channel="email", detail={},
        occurred_at=T0 + timedelta(hours=4), received_at=T0))
    report = await journey_report(store, KEY, now=T0)
    experiment = next(e for e in report.experiments if e.step == "email_reminder")
    assert (experiment.kind, experiment.metric, experiment.automatic) == ("variants", "clicks",
                                                                          True)
    arms = {arm.name: arm for arm in experiment.arms}
    assert (arms["control"].contacts, arms["control"].conversions) == (115, 18)
    assert (arms["urgent"].contacts, arms["urgent"].conversions) == (105, 8)
    assert arms["control"].control and arms["control"].p_value is None
    assert arms["urgent"].template == "cart-reminder-urgent"
    assert arms["urgent"].rate == pytest.approx(8 / 105)
    assert arms["urgent"].uplift == pytest.approx((8 / 105) / (18 / 115) - 1)
    assert experiment.decision is None
    # past 100 per arm, control leads; the engine looked at 100 (nothing significant at
    # its spent level) and looks again at 200
    assert experiment.status == ("deciding: control leads, no significant winner at the last "
                                 "look; next look when the smallest arm reaches 200 contacts")
    assert {(m.template, m.variant) for m in report.messages} == {
        ("cart-reminder", "control"), ("cart-reminder-urgent", "urgent")}


async def test_exactly_the_smokers_counts_give_their_p_value(store: Store) -> None:
    await publish(store, DEFINITION)
    control = await add(store, *(send(n, "control", "cart-reminder") for n in range(115)))
    urgent = await add(store, *(send(1000 + n, "urgent", "cart-reminder-urgent")
                                for n in range(105)))
    await add(store, *(clicked(n, control[n]) for n in range(18)),
              *(clicked(1000 + n, urgent[n]) for n in range(7)))
    report = await journey_report(store, KEY, now=T0)
    arms = {a.name: a for a in next(e for e in report.experiments if e.kind == "variants").arms}
    assert arms["urgent"].p_value == pytest.approx(0.036, abs=5e-4)
    assert arms["urgent"].probability_to_be_best < 0.05


async def test_a_split_with_a_holdout_measures_the_goal_within_its_window(store: Store) -> None:
    await publish(store, DEFINITION)
    rows: list[Any] = []
    for n in range(20):  # 15 reminded (5 convert), 5 held out (1 buys anyway, 1 too late)
        arm = "holdout" if n < 5 else "remind"
        rows.append(ExperimentAssignment(
            idempotency_key=f"a/{n}", journey_key=KEY, journey_version=1, step="ab",
            workflow_id=f"journey/{KEY}/c-{n}", contact_id=f"c-{n}", arm=arm, assigned_at=T0))
    for n in range(5, 10):  # the reminded converters: their entries ended by the goal
        rows.append(Entry(journey_key=KEY, version=1, contact_id=f"c-{n}", entry_key=None,
                          workflow_id=f"journey/{KEY}/c-{n}", entered_at=T0,
                          ended_at=T0 + timedelta(hours=5), outcome="converted"))
    for n, delay in ((0, timedelta(days=1)), (1, timedelta(days=4))):
        rows.append(Event(message_id=f"buy-{n}", type="track", contact_id=f"c-{n}",
                          name="checkout_completed", properties={}, timestamp=T0 + delay,
                          received_at=T0 + delay))
    rows.append(ExperimentDecision(journey_key=KEY, step="email_reminder", winner="urgent",
                                   reason="urgent beats every other arm", metric="clicks",
                                   figures=[{"name": "urgent", "contacts": 100}],
                                   decided_at=T0 + timedelta(days=2)))
    await add(store, *rows)
    report = await journey_report(store, KEY, now=T0)
    split = next(e for e in report.experiments if e.kind == "split")
    arms = {arm.name: arm for arm in split.arms}
    assert (arms["holdout"].contacts, arms["holdout"].conversions) == (5, 1)
    assert (arms["remind"].contacts, arms["remind"].conversions) == (15, 5)
    assert arms["holdout"].control
    assert arms["remind"].uplift == pytest.approx((5 / 15) / (1 / 5) - 1)
    assert split.status.startswith("measuring (one arm besides the holdout")
    sends = next(e for e in report.experiments if e.kind == "variants")
    assert sends.decision is not None and sends.decision.winner == "urgent"
    assert sends.status.startswith("decided: urgent")


async def test_a_goal_metric_counts_only_goal_events_that_meet_the_goals_where(
    store: Store,
) -> None:
    definition = {**DEFINITION, "exit": [{"event": "checkout_completed", "goal": "converted",
                                          "where": {"properties.value": {"gte": 20}}}]}
    await publish(store, definition)
    rows: list[Any] = [ExperimentAssignment(
        idempotency_key=f"a/{n}", journey_key=KEY, journey_version=1, step="ab",
        workflow_id=f"journey/{KEY}/c-{n}", contact_id=f"c-{n}",
        arm="holdout" if n < 4 else "remind", assigned_at=T0) for n in range(8)]
    for n, value in ((0, 35), (1, 5), (2, 19.99), (4, 20), (5, 3)):
        at = T0 + timedelta(hours=n + 1)
        rows.append(Event(message_id=f"buy-{n}", type="track", contact_id=f"c-{n}",
                          name="checkout_completed", properties={"value": value},
                          timestamp=at, received_at=at))
    await add(store, *rows)
    report = await journey_report(store, KEY, now=T0)
    arms = {a.name: a for a in next(e for e in report.experiments if e.kind == "split").arms}
    # a purchase under 20 is no conversion for the goal, as the journey's exit says
    assert (arms["holdout"].contacts, arms["holdout"].conversions) == (4, 1)
    assert (arms["remind"].contacts, arms["remind"].conversions) == (4, 1)


async def test_a_version_with_other_variants_is_a_fresh_experiment(store: Store) -> None:
    await publish(store, DEFINITION)
    first = await add(store, *(send(n, "control", "cart-reminder") for n in range(3)),
                      *(send(100 + n, "urgent", "cart-reminder-urgent") for n in range(3)))
    await add(store, *(Entry(journey_key=KEY, version=1, contact_id=row.contact_id,
                             entry_key=None, workflow_id=row.workflow_id, entered_at=T0)
                       for row in first))
    async with store.session() as s, s.begin():
        v1 = journeys_repo.journey_of(await journeys_repo.get_version(s, KEY, 1))
        s.add(ExperimentDecision(
            journey_key=KEY, step="email_reminder", winner="urgent", reason="v1's winner",
            metric="clicks", figures=[], decided_at=T0 + timedelta(days=1),
            arms=arms_key(v1.steps["email_reminder"])))
    # version 2 drops the urgent copy for a friendly one
    steps = {**DEFINITION["steps"], "email_reminder": {"send": {
        "channel": "email",
        "variants": [{"template": "cart-reminder", "name": "control"},
                     {"template": "cart-reminder-friendly", "name": "friendly"}],
        "experiment": {"metric": "clicks", "min_per_arm": 20, "then": "winner"}},
        "next": "end"}}
    await publish(store, {**DEFINITION, "steps": steps})
    second = await add(store, *(send(200 + n, "control", "cart-reminder") for n in range(20)),
                       *(send(300 + n, "friendly", "cart-reminder-friendly")
                         for n in range(20)))
    await add(store, *(Entry(journey_key=KEY, version=2, contact_id=row.contact_id,
                             entry_key=None, workflow_id=row.workflow_id, entered_at=T0)
                       for row in second),
              *(clicked(300 + n, second[20 + n]) for n in range(15)))
    report = await journey_report(store, KEY, now=T0)
    experiment = next(e for e in report.experiments if e.kind == "variants")
    assert experiment.decision is None  # v1's winner is not this experiment's
    arms = {a.name: a for a in experiment.arms}
    assert (arms["control"].contacts, arms["friendly"].contacts) == (20, 20)  # v1's left out
    v2 = Site.of(journeys_repo.journey_of(
        await _version(store, 2)), "email_reminder")
    async with store.session() as s, s.begin():
        assert (await decision_of(s, v2)) is None
        decided = await take_decision(s, v2, T0 + timedelta(days=2))
    assert decided is not None and decided.winner == "friendly"
    async with store.session() as s:
        # both decisions are kept, each for its own arms
        v1_site = Site.of(v1, "email_reminder")
        assert (await decision_of(s, v1_site)).winner == "urgent"  # type: ignore[union-attr]
        assert (await decision_of(s, v2)).winner == "friendly"  # type: ignore[union-attr]
    # a decision from before decisions named their arms still holds while its winner is an arm
    async with store.session() as s, s.begin():
        s.add(ExperimentDecision(journey_key=KEY, step="ab", winner="remind", reason="old",
                                 metric="goal converted", figures=[], decided_at=T0))
    async with store.session() as s:
        assert (await decision_of(s, Site.of(v1, "ab"))).winner == "remind"  # type: ignore[union-attr]


async def _version(store: Store, version: int) -> Any:
    async with store.session() as s:
        return await journeys_repo.get_version(s, KEY, version)
