"""`cairn simulate`: play a scenario against a journey file and print the timeline (or its JSON).

The command only loads files, runs `cairn.simulation` and prints; with `--json`, stdout carries
the report object and nothing else (logs go to stderr), so CI scripts can pipe it into `jq`. The
segments, scoring rules and delivery policy beside the journey apply, as they do live.
Exit status: 0 when the simulation ran (whatever the journey's outcome), 1 for a bad journey,
scenario or policy file, 2 when the simulator itself could not run (e.g. no test server binary).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from starter.cli.app import app

if TYPE_CHECKING:
    from cairn.delivery_policy import DeliveryPolicy
    from cairn.journey import Journey
    from cairn.simulation.report import SimulationReport
    from cairn.simulation.scenario import Scenario

BAD_INPUT = 1
SIMULATOR_FAILED = 2


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _load(journey_path: Path, scenario_path: Path) -> tuple[Journey, Scenario]:
    from cairn.journey_files import load_journey
    from cairn.problems import JourneyFileError
    from cairn.simulation.errors import ScenarioError
    from cairn.simulation.scenario import load_scenario

    try:
        journey = load_journey(journey_path)
    except JourneyFileError as error:
        lines = [f"{journey_path}: the journey is not valid:"]
        lines += [f"  {problem}" for problem in error.problems]
        raise _fail("\n".join(lines), BAD_INPUT) from None
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as error:
        lines = [f"{scenario_path}: the scenario is not valid:"]
        lines += [f"  {scenario_path}: {problem}" for problem in error.problems]
        raise _fail("\n".join(lines), BAD_INPUT) from None
    return journey, scenario


def _core_logs_to_stderr() -> None:
    """Temporal's core writes its own log lines to stdout; route them through Python logging.

    Only errors are kept: the test server's age makes the core warn about heartbeat details,
    which says nothing about the journey and would clutter the timeline.
    """
    import logging

    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=logging_config)),
                        error_if_already_set=False)


def _check_profile_rules(folder: Path) -> None:
    """Segments and scoring rules beside the journey apply in the simulation: check them first."""
    from cairn.catalog_folder import load_profile_rules
    from cairn.problems import DefinitionFileError

    try:
        load_profile_rules(folder)
    except DefinitionFileError as error:
        raise _fail(str(error), BAD_INPUT) from None


def _policy(journey_path: Path) -> DeliveryPolicy:
    """The delivery policy beside the journey (a scenario's own `policy` replaces it)."""
    from cairn.delivery_policy import PolicyError
    from starter.testing import policy_beside

    try:
        return policy_beside(journey_path)
    except PolicyError as error:
        raise _fail(str(error), BAD_INPUT) from None


async def _simulate(journey: Journey, scenario: Scenario, folder: Path,
                    policy: DeliveryPolicy) -> SimulationReport:
    from starter.testing import Simulator

    async with Simulator.start() as simulator:
        return await simulator.run(journey, scenario, audience_folder=folder, policy=policy)


@app.command()
def simulate(
    journey_file: Annotated[Path, typer.Argument(
        metavar="JOURNEY", help="journey file (YAML or JSON) with its templates/ beside it"
    )],
    scenario_file: Annotated[Path, typer.Option(
        "--scenario", "-s", help="scenario file: now, contact, events, until"
    )],
    as_json: Annotated[bool, typer.Option(
        "--json", help="print the report as one JSON object"
    )] = False,
) -> None:
    """Run a journey for one scripted contact on a skipping clock and show what happens."""
    from cairn.log import configure
    from cairn.simulation.errors import SimulationError

    configure("WARNING")
    _core_logs_to_stderr()
    journey, scenario = _load(journey_file, scenario_file)
    folder = journey_file.resolve().parent
    _check_profile_rules(folder)
    policy = _policy(journey_file)
    try:
        report = asyncio.run(_simulate(journey, scenario, folder, policy))
    except SimulationError as error:
        raise _fail(f"the simulation could not run: {error}", SIMULATOR_FAILED) from None
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        print_timeline(report)


def print_timeline(report: SimulationReport) -> None:
    """The report for people: the path, then each kind of side effect that happened."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    data = report.model_dump(mode="json")
    version = f" v{report.version}" if report.version is not None else ""
    console.print(
        f"[bold]{report.journey}{version}[/bold] for contact [bold]{report.contact}[/bold]: "
        f"outcome [bold]{report.outcome}[/bold]"
    )
    sections: list[tuple[str, str, list[str]]] = [
        ("Path", "path", ["at", "step", "note"]),
        ("Sends", "sends", ["at", "step", "channel", "template", "status", "reason"]),
        ("Clicks", "clicks", ["at", "step", "channel", "template", "link", "url"]),
        ("Scores", "scores", ["at", "dimension", "add", "total"]),
        ("Tasks", "tasks", ["at", "queue", "title", "due"]),
        ("Alerts", "alerts", ["at", "step", "to", "template", "status"]),
        ("Webhooks", "webhooks", ["at", "step", "method", "url", "status"]),
        ("Audiences", "audiences", ["at", "step", "sync", "audience", "action", "status"]),
    ]
    for title, key, columns in sections:
        rows = data[key]
        if not rows and key != "sends":
            continue
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        if not rows:
            console.print("[dim]No sends.[/dim]")
        else:
            console.print(table)
