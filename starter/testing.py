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

A journey given as a file path is simulated under the delivery policy beside it
(`policies/delivery.yaml` in its folder, as `cairn validate` finds it), so caps and quiet hours
behave as live; a scenario's own `policy:` replaces that file.

This module only re-exports `cairn.simulation` and adds loaders; the simulator lives there.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from cairn.catalog_folder import load_policy
from cairn.delivery_policy import DeliveryPolicy
from cairn.journey import Journey
from cairn.simulation import engine
from cairn.simulation.crowd import Behaviour, CrowdReport, play_crowd
from cairn.simulation.engine import DEFAULT_STEP_TIMEOUT, RunWorkers, simulation_data_converter
from cairn.simulation.errors import ScenarioError, SimulationError
from cairn.simulation.report import SimulationReport
from cairn.simulation.scenario import Scenario, load_scenario, parse_scenario
from starter.worker import simulation_workers

__all__ = [
    "Behaviour",
    "CrowdReport",
    "Scenario",
    "ScenarioError",
    "SimulationError",
    "SimulationReport",
    "Simulator",
    "as_journey",
    "as_scenario",
    "load_scenario",
    "parse_scenario",
    "policy_beside",
    "simulate",
    "simulate_crowd",
    "simulate_sync",
    "simulation_data_converter",
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


def policy_beside(journey_file: Path | str) -> DeliveryPolicy:
    """The delivery policy in `policies/delivery.yaml` of the folder a journey file is in (an
    empty policy when there is none); `cairn.delivery_policy.PolicyError` names a bad field."""
    return load_policy(Path(journey_file).resolve().parent)


async def simulate(
    journey: Journey | Path | str | Mapping[str, Any],
    scenario: Scenario | Path | str | Mapping[str, Any],
    *,
    simulator: Simulator | None = None,
) -> SimulationReport:
    """Run one scenario against one journey and return the report (docs/simulation.md).

    A journey file brings the delivery policy beside it (`policy_beside`); a journey given as a
    model or a mapping has none. A scenario's own `policy` replaces either.
    """
    definition, script = as_journey(journey), as_scenario(scenario)
    policy = policy_beside(journey) if isinstance(journey, Path | str) else None
    if simulator is not None:
        return await simulator.run(definition, script, policy=policy)
    async with Simulator.start() as own:
        return await own.run(definition, script, policy=policy)


async def simulate_crowd(
    journey: Journey | Path | str | Mapping[str, Any],
    scenario: Scenario | Path | str | Mapping[str, Any],
    *,
    step: str,
    contacts: int,
    behaviour: Mapping[str, Behaviour | Mapping[str, Any]],
    conversion: Mapping[str, Any] | None = None,
    seed: int = 13,
    spacing: timedelta = timedelta(minutes=10),
    simulator: Simulator | None = None,
) -> CrowdReport:
    """Run the scenario for `contacts` contacts through the real engine, each reacting to the
    arm it got at `step` as `behaviour` says (`{"a": {"click": 0.1}, "b": {"convert": 0.2}}`);
    the experiment's figures as `cairn report` computes them (docs/simulation.md)."""
    from cairn.simulation.scenario import ScenarioEvent

    definition, script = as_journey(journey), as_scenario(scenario)
    rates = {arm: b if isinstance(b, Behaviour) else Behaviour.model_validate(b)
             for arm, b in behaviour.items()}
    event = ScenarioEvent.model_validate(conversion) if conversion is not None else None

    async def play(sim: Simulator) -> CrowdReport:
        return await play_crowd(sim, definition, script, step=step, contacts=contacts,
                                behaviour=rates, conversion=event, seed=seed, spacing=spacing)

    if simulator is not None:
        return await play(simulator)
    async with Simulator.start() as own:
        return await play(own)


def simulate_sync(
    journey: Journey | Path | str | Mapping[str, Any],
    scenario: Scenario | Path | str | Mapping[str, Any],
) -> SimulationReport:
    """`simulate` for synchronous tests (starts and stops a server of its own)."""
    return asyncio.run(simulate(journey, scenario))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free loopback port in this event loop; yields its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        listener.close()
