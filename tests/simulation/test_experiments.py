"""Experiments in simulations: the simulator's JSON names each send's variant, and the population
helper plays an experiment for many contacts with given behaviour."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.arms import variant_for
from cairn.journey import Journey
from cairn.simulation.engine import Simulator
from cairn.simulation.population import simulate_experiment
from cairn.simulation.scenario import parse_scenario


def offer(**experiment: Any) -> Journey:
    return Journey.model_validate({
        "key": "offer", "name": "Offer", "trigger": {"event": "go"},
        "exit": [{"event": "bought", "goal": "converted"}],
        "steps": {"mail": {"send": {
            "channel": "email", "category": "transactional",
            "variants": [{"template": "plain", "name": "a"}, {"template": "bold", "name": "b"}],
            **({"experiment": experiment} if experiment else {})}, "next": "end"}},
        "templates": {"plain": {"email": {"subject": "Plain", "body": "p"}},
                      "bold": {"email": {"subject": "Bold", "body": "b"}}},
    })


async def test_the_simulator_json_names_the_variant(simulator: Simulator) -> None:
    journey = offer()
    step = journey.steps["mail"]
    for contact in ("c-1", "c-2", "c-3", "c-4"):
        expected = variant_for(step.send, "offer", "mail", contact)  # type: ignore[attr-defined]
        report = await simulator.run(journey, parse_scenario({
            "now": "2026-03-02T09:00:00Z",
            "contact": {"id": contact, "email": f"{contact}@example.com"},
            "events": [{"at": "+0s", "event": "go"}], "until": "+1h"}))
        [send] = report.model_dump(mode="json")["sends"]
        assert (send["variant"], send["template"]) == (expected.arm, expected.template)
        assert f"(variant {expected.arm})" in report.path[0].note


def test_a_population_finds_the_better_copy_after_min_per_arm() -> None:
    journey = offer(metric={"goal": "converted"}, min_per_arm=200, then="winner")
    report = simulate_experiment(journey, "mail", contacts=3000,
                                 rates={"a": 0.05, "b": 0.15}, seed=1)
    assert report.winner == "b"
    assert report.decided_after is not None and report.decided_after >= 400  # 200 per arm
    arms = {arm.name: arm for arm in report.arms}
    assert arms["b"].contacts > 2000  # every contact after the decision got b
    assert arms["a"].control and arms["b"].uplift is not None and arms["b"].uplift > 1
    again = simulate_experiment(journey, "mail", contacts=3000, rates={"a": 0.05, "b": 0.15},
                                seed=1)
    assert again == report


def test_equal_arms_decide_nothing_and_weights_split_the_contacts() -> None:
    journey = offer(metric="clicks", min_per_arm=100, then="winner")
    report = simulate_experiment(journey, "mail", contacts=2000, rates={"a": 0.1, "b": 0.1})
    assert report.winner is None and report.decided_after is None
    assert "leads, not significantly" in report.reason
    contacts = {arm.name: arm.contacts for arm in report.arms}
    assert 900 < contacts["a"] < 1100


def test_rates_must_name_every_arm() -> None:
    with pytest.raises(ValueError, match=r"unknown 'c'; missing 'b'"):
        simulate_experiment(offer(), "mail", contacts=10, rates={"a": 0.1, "c": 0.2})
