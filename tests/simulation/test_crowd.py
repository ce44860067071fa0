"""Many simulated contacts through the real engine (`cairn.simulation.crowd`): per-arm figures
as the report computes them, and the automatic winner taken by the real activities."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from cairn.journey import Journey
from cairn.simulation.crowd import Behaviour, play_crowd
from cairn.simulation.engine import Simulator
from cairn.simulation.scenario import parse_scenario

SCENARIO = parse_scenario({
    "now": "2026-03-02T09:00:00Z",
    "contact": {"id": "shopper", "email": "shopper@example.com",
                "consent": {"marketing": True}},
    "events": [{"at": "+0s", "event": "go"}], "until": "+2d"})


def offer(**experiment: Any) -> Journey:
    return Journey.model_validate({
        "key": "offer", "name": "Offer", "trigger": {"event": "go"},
        "exit": [{"event": "bought", "goal": "converted", "where": {"properties.value": {
            "gte": 20}}}],
        "steps": {"mail": {"send": {
            "channel": "email",
            "variants": [{"template": "plain", "name": "a"}, {"template": "bold", "name": "b"}],
            "experiment": experiment}, "next": "end"}},
        "templates": {
            "plain": {"email": {"subject": "Plain", "body": "See https://shop.example/cart"}},
            "bold": {"email": {"subject": "Bold", "body": "See https://shop.example/cart"}}},
    })


async def test_a_crowd_of_contacts_decides_the_clicked_copy(simulator: Simulator) -> None:
    journey = offer(metric="clicks", min_per_arm=20, then="winner")
    started = time.perf_counter()
    report = await play_crowd(simulator, journey, SCENARIO, step="mail", contacts=100,
                              behaviour={"a": Behaviour(click=0.05), "b": Behaviour(click=0.7)},
                              seed=3)
    print(f"crowd of 100 contacts: {time.perf_counter() - started:.1f}s")
    assert report.entered == 100 and report.funnel.entries == 100
    experiment = report.experiment
    assert experiment.decision is not None and experiment.decision.winner == "b"
    arms = {arm.name: arm for arm in experiment.arms}
    assert arms["a"].contacts >= 20 and arms["b"].contacts > arms["a"].contacts
    assert arms["b"].rate is not None and arms["b"].rate > 0.4
    assert arms["a"].rate is not None and arms["a"].rate < 0.2
    # the message table agrees: b sent to everyone after the decision, its links clicked
    rows = {m.variant: m for m in report.messages}
    assert rows["b"].sent == arms["b"].contacts and rows["a"].sent == arms["a"].contacts
    assert rows["b"].links[0].url == "https://shop.example/cart"
    assert rows["b"].links[0].unique_clickers == arms["b"].conversions
    again = await play_crowd(simulator, journey, SCENARIO, step="mail", contacts=100,
                             behaviour={"a": Behaviour(click=0.05), "b": Behaviour(click=0.7)},
                             seed=3)
    assert [(a.name, a.contacts, a.conversions) for a in again.experiment.arms] == [
        (a.name, a.contacts, a.conversions) for a in experiment.arms]


async def test_conversions_count_for_the_goal_and_nothing_is_decided_before_min_per_arm(
    simulator: Simulator,
) -> None:
    journey = offer(metric={"goal": "converted"}, min_per_arm=40, then="winner", within="1d")
    report = await play_crowd(
        simulator, journey, SCENARIO, step="mail", contacts=50,
        behaviour={"a": Behaviour(convert=0.0), "b": Behaviour(convert=1.0,
                                                                after=timedelta(hours=2))},
        conversion=SCENARIO.events[0].model_copy(update={"event": "bought",
                                                         "properties": {"value": 25}}))
    experiment = report.experiment
    arms = {arm.name: arm for arm in experiment.arms}
    assert arms["a"].contacts + arms["b"].contacts == 50
    assert arms["a"].conversions == 0 and arms["b"].conversions == arms["b"].contacts
    assert experiment.decision is None  # fewer than 40 per arm
    assert experiment.status.startswith("deciding: waiting for 40 contacts per arm")
    [goal] = report.funnel.goals
    assert goal.conversions == 0  # the mail ends the run at once: the goal came later


async def test_behaviour_must_name_every_arm(simulator: Simulator) -> None:
    with pytest.raises(ValueError, match=r"unknown 'c'; missing 'b'"):
        await play_crowd(simulator, offer(metric="clicks"), SCENARIO, step="mail", contacts=5,
                         behaviour={"a": Behaviour(), "c": Behaviour()})
