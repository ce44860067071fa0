"""`cairn validate` and `cairn graph`: check journey files before publishing them, and draw them.

Both work on files alone (no Temporal, no database), so they run in CI and in editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cairn.journey import Journey
from starter.cli.app import app
from starter.cli.common import fail, load_settings, with_store

if TYPE_CHECKING:
    from cairn.settings import Settings
    from cairn.store.db import Store


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(help="journey files, or folders of them (e.g. journeys/)"),
    ],
) -> None:
    """Check journey files and their templates; list every problem with its file and path."""
    from cairn.journey_files import validate as validate_files

    result = validate_files(paths)
    problems = [str(problem) for problem in result.problems]
    audience: list[str] = []
    for folder in (path for path in paths if path.is_dir()):
        found, summary = _profile_rule_problems(folder, [j for _, j in result.journeys])
        problems += found
        audience += summary
    for problem in problems:
        typer.echo(problem)
    if problems:
        typer.echo(f"{len(problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    for path, journey in result.journeys:
        typer.echo(f"OK {path}: {journey.key} ({len(journey.steps)} steps)")
    for line in audience:
        typer.echo(line)


def _profile_rule_problems(folder: Path, journeys: list[Journey]) -> tuple[list[str], list[str]]:
    """Segments, scoring rules and geofences beside the journeys, and the triggers naming them."""
    from cairn.catalog_folder import (
        POLICY_FILE,
        load_geofences,
        load_policy,
        load_scoring,
        load_segments,
    )
    from cairn.problems import DefinitionFileError

    problems: list[str] = []
    summary: list[str] = []
    segments: set[str] | None = None
    fences: set[str] | None = None
    try:
        policy = load_policy(folder)
    except DefinitionFileError as error:
        problems += [str(p) for p in error.problems]
    else:
        if (folder / POLICY_FILE).exists():
            summary.append(f"OK {folder / POLICY_FILE}: quiet hours on "
                           f"{len(policy.quiet_hours)} channel(s), {len(policy.caps)} cap(s)")
    try:
        segments = {s.key for s in load_segments(folder)}
    except DefinitionFileError as error:
        problems += [str(p) for p in error.problems]
    try:
        load_scoring(folder, segments=segments)
    except DefinitionFileError as error:
        problems += [str(p) for p in error.problems]
    try:
        fences = {f.key for f in load_geofences(folder)}
    except DefinitionFileError as error:
        problems += [str(p) for p in error.problems]
    for journey in journeys:
        trigger = journey.trigger
        for kind, known in (("segment_entered", segments), ("segment_exited", segments),
                            ("geofence_entered", fences), ("geofence_exited", fences)):
            name = getattr(trigger, kind)
            if name is not None and known is not None and name not in known:
                problems.append(f"{journey.key}: trigger.{kind}: unknown {kind.split('_')[0]} "
                                f"{name!r} (not in {folder / kind.split('_')[0]}s)")
    if segments:
        summary.append(f"OK {folder / 'segments'}: {len(segments)} segment(s)")
    if fences:
        summary.append(f"OK {folder / 'geofences'}: {len(fences)} geofence(s)")
    return problems, summary


@app.command()
def graph(
    journey: Annotated[
        str, typer.Argument(help="a journey file, or a journey key from the journeys folder")
    ],
    journeys_dir: Annotated[
        Path | None,
        typer.Option(help="where journey keys are looked up (default: settings journeys_dir)"),
    ] = None,
    counts: Annotated[
        bool,
        typer.Option("--counts/--no-counts",
                     help="show how many contacts are in each step now, when Temporal answers"),
    ] = True,
    funnel: Annotated[
        bool,
        typer.Option("--funnel",
                     help="write the journey report's step funnel on the graph (from the store)"),
    ] = False,
    version: Annotated[int | None, typer.Option(
        min=1, help="with --funnel: one version (default: all)")] = None,
    since: Annotated[str | None, typer.Option(
        help="with --funnel: entries from a date (2026-03-01), a time, or back from now (7d)",
    )] = None,
) -> None:
    """Print the journey's steps as a Mermaid flowchart (paste into any Markdown viewer).

    With a Temporal server reachable (CAIRN_TEMPORAL_ADDRESS), each step shows how many running
    entries are in it right now; without one, the plain graph. With `--funnel`, the figures of
    `cairn report` instead: on each step how many entries reached it and wait there (and the
    exit goals caught there), on each arrow how many left by it."""
    from cairn.graph import mermaid
    from cairn.journey_files import find_journey, load_journey
    from cairn.problems import JourneyFileError

    settings = load_settings()
    try:
        path = Path(journey)
        if not path.is_file():
            path = find_journey(journey, journeys_dir or settings.journeys_dir)
        definition = load_journey(path)
    except JourneyFileError as error:
        for problem in error.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(1) from None
    if funnel:
        figures = _funnel(settings, definition.key, version, since)
        typer.echo(mermaid(definition, funnel=figures), nl=False)
        return
    per_step = _step_counts(settings, definition.key, list(definition.steps)) if counts else None
    typer.echo(mermaid(definition, per_step), nl=False)


def _funnel(settings: Settings, journey_key: str, version: int | None,
            since: str | None) -> dict[str, Any]:
    """The report's figures per step (`cairn report`'s), for `graph --funnel`."""
    import asyncio
    from datetime import UTC, datetime

    from cairn.reports import UnknownJourney, journey_report
    from starter.cli.report import parse_since

    now = datetime.now(UTC)
    try:
        start = parse_since(since, now) if since else None
    except ValueError as error:
        raise fail(str(error), 2) from None

    async def collect(store: Store) -> dict[str, Any]:
        found = await journey_report(store, journey_key, version=version, since=start, now=now)
        return {step.step: step for step in found.steps}

    try:
        return asyncio.run(with_store(settings, collect))
    except UnknownJourney as error:
        raise fail(str(error)) from None


def _step_counts(settings: Settings, journey_key: str,
                 steps: list[str]) -> dict[str, int] | None:
    """Running entries per current step from Temporal's visibility; None (and a note on stderr)
    when no server answers or it cannot list runs."""
    import asyncio

    from temporalio.service import RPCError

    from starter.cli.catalog import step_counts
    from starter.temporal import TemporalConnectionError, connect

    async def collect() -> dict[str, int] | None:
        try:
            client = await asyncio.wait_for(connect(settings), timeout=5)
            return dict(await step_counts(client, journey_key, steps))
        except (TemporalConnectionError, RPCError, TimeoutError) as error:
            typer.echo(f"no per-step counts: Temporal at {settings.temporal_address} did not "
                       f"answer ({type(error).__name__})", err=True)
            return None

    return asyncio.run(collect())
