"""Journeys tested like code: the simulator as a library for your own pytest suite.

    from starter.testing import simulate

    async def test_converted_before_the_push():
        report = await simulate("journeys/cart-abandonment.yaml", {
            "now": "2026-03-02T09:00:00Z",
            "contact": {"id": "c-1", "push_tokens": ["tok-1"],
                        "attributes": {"cart": {"items": 2}}},
            "events": [{"at": "+0s", "event": "cart_item_added", "properties": {"value": 25}},
                       {"at": "+1h", "event": "checkout_completed"}],
        })
        assert report.outcome == "converted"
        assert report.sends == []

Each `simulate` call without a `simulator` starts its own time-skipping server (about a second);
a suite with many scenarios shares one through `Simulator.start()` in a session fixture:

    @pytest_asyncio.fixture(scope="session")
    async def simulator():
        async with Simulator.start() as sim:
            yield sim

This module only re-exports `cairn.simulation` and adds loaders; the simulator lives there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from cairn.journey import Journey
from cairn.simulation import engine
from cairn.simulation.engine import DEFAULT_STEP_TIMEOUT, RunWorkers
from cairn.simulation.errors import ScenarioError, SimulationError
from cairn.simulation.report import SimulationReport
from cairn.simulation.scenario import Scenario, load_scenario, parse_scenario
from starter.worker import simulation_workers

__all__ = [
    "Scenario",
    "ScenarioError",
    "SimulationError",
    "SimulationReport",
    "Simulator",
    "as_journey",
    "as_scenario",
    "load_scenario",
    "parse_scenario",
    "simulate",
    "simulate_sync",
]


class Simulator(engine.Simulator):
    """The simulator with Cairn's own workers: the journey interpreter and every activity."""

    def __init__(self, env: WorkflowEnvironment, *, workers: RunWorkers = simulation_workers,
                 step_timeout: timedelta = DEFAULT_STEP_TIMEOUT) -> None:
        super().__init__(env, workers=workers, step_timeout=step_timeout)


def as_journey(journey: Journey | Path | str | Mapping[str, Any]) -> Journey:
    """A journey from a model, a file path (with its templates/ folder) or a mapping."""
    if isinstance(journey, Journey):
        return journey
    if isinstance(journey, Path | str):
        from cairn.journey_files import load_journey

        return load_journey(Path(journey))
    return Journey.model_validate(journey)


def as_scenario(scenario: Scenario | Path | str | Mapping[str, Any]) -> Scenario:
    """A scenario from a model, a file path (YAML or JSON) or a mapping."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Path | str):
        return load_scenario(Path(scenario))
    return parse_scenario(scenario)


async def simulate(
    journey: Journey | Path | str | Mapping[str, Any],
    scenario: Scenario | Path | str | Mapping[str, Any],
    *,
    simulator: Simulator | None = None,
) -> SimulationReport:
    """Run one scenario against one journey and return the report (docs/simulation.md)."""
    definition, script = as_journey(journey), as_scenario(scenario)
    if simulator is not None:
        return await simulator.run(definition, script)
    async with Simulator.start() as own:
        return await own.run(definition, script)


def simulate_sync(
    journey: Journey | Path | str | Mapping[str, Any],
    scenario: Scenario | Path | str | Mapping[str, Any],
) -> SimulationReport:
    """`simulate` for synchronous tests (starts and stops a server of its own)."""
    return asyncio.run(simulate(journey, scenario))
