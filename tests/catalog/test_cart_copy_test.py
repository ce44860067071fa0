"""The copy test of docs/analytics.md#experiments: the catalog's cart-abandonment journey with its
reminder email under test (docs/examples/cart-abandonment-copy-test.yaml), checked as a user
would in CI: it validates, one simulated contact gets a variant, and a population with a better
urgent copy picks it."""

from __future__ import annotations

from pathlib import Path

from cairn.arms import variant_for
from cairn.journey import SendStep
from cairn.journey_files import load_journey
from cairn.simulation.engine import Simulator
from cairn.simulation.population import simulate_experiment
from cairn.simulation.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = load_journey(ROOT / "docs" / "examples" / "cart-abandonment-copy-test.yaml")


def test_the_example_tests_the_catalog_email_against_an_urgent_copy() -> None:
    step = EXAMPLE.steps["email_reminder"]
    assert isinstance(step, SendStep) and step.send.variants is not None
    assert [(v.arm, v.template) for v in step.send.variants] == [
        ("similar", "cart-reminder-similar"), ("urgent", "cart-reminder-similar-urgent")]
    assert set(EXAMPLE.templates) >= {"cart-reminder-similar", "cart-reminder-similar-urgent"}


async def test_a_simulated_contact_gets_its_variant(simulator: Simulator) -> None:
    report = await simulator.run(EXAMPLE, parse_scenario({
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "c-7", "email": "ana@example.com", "consent": {"marketing": True},
                    "attributes": {"first_name": "Ana", "cart": {"items": 2}}},
        "events": [{"at": "+0s", "event": "cart_item_added",
                    "properties": {"value": 25, "name": "Mug"}}],
        "until": "+1d"}))
    step = EXAMPLE.steps["email_reminder"]
    expected = variant_for(step.send, EXAMPLE.key, "email_reminder", "c-7")  # type: ignore[attr-defined]
    [email] = [s for s in report.model_dump(mode="json")["sends"]
               if s["step"] == "email_reminder"]
    assert (email["variant"], email["template"], email["status"]) == (
        expected.arm, expected.template, "sent")


def test_a_population_with_a_better_urgent_copy_picks_it() -> None:
    report = simulate_experiment(EXAMPLE, "email_reminder", contacts=5000,
                                 rates={"similar": 0.10, "urgent": 0.14}, seed=2)
    assert report.winner == "urgent"
    assert report.decided_after == 815  # both arms past 400: the first look
    arms = {arm.name: arm for arm in report.arms}
    assert arms["similar"].contacts == 415 and arms["urgent"].contacts == 4585
