"""`cairn validate` and `cairn graph`: check journey files before publishing them, and draw them.

Both work on files alone (no Temporal, no database), so they run in CI and in editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cairn.journey import Journey
from starter.cli_app import app


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
        found, summary = _audience_problems(folder, [j for _, j in result.journeys])
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


def _audience_problems(folder: Path, journeys: list[Journey]) -> tuple[list[str], list[str]]:
    """Segments, scoring rules and geofences beside the journeys, and the triggers naming them."""
    from cairn.geofences import GeofenceFileError, load_geofences
    from cairn.scoring import ScoringFileError, load_scoring
    from cairn.segments import SegmentFileError, load_segments

    problems: list[str] = []
    segments: set[str] | None = None
    fences: set[str] | None = None
    try:
        segments = {s.key for s in load_segments(folder / "segments")}
    except SegmentFileError as error:
        problems += [str(p) for p in error.problems]
    try:
        load_scoring(folder / "scoring", segments=segments)
    except ScoringFileError as error:
        problems += [str(p) for p in error.problems]
    try:
        fences = {f.key for f in load_geofences(folder / "geofences")}
    except GeofenceFileError as error:
        problems += [str(p) for p in error.problems]
    for journey in journeys:
        trigger = journey.trigger
        for kind, known in (("segment_entered", segments), ("segment_exited", segments),
                            ("geofence_entered", fences), ("geofence_exited", fences)):
            name = getattr(trigger, kind)
            if name is not None and known is not None and name not in known:
                problems.append(f"{journey.key}: trigger.{kind}: unknown {kind.split('_')[0]} "
                                f"{name!r} (not in {folder / kind.split('_')[0]}s)")
    summary = []
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
) -> None:
    """Print the journey's steps as a Mermaid flowchart (paste into any Markdown viewer)."""
    from cairn.graph import mermaid
    from cairn.journey_files import JourneyFileError, find_journey, load_journey
    from cairn.settings import get_settings

    try:
        path = Path(journey)
        if not path.is_file():
            path = find_journey(journey, journeys_dir or get_settings().journeys_dir)
        definition = load_journey(path)
    except JourneyFileError as error:
        for problem in error.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(1) from None
    typer.echo(mermaid(definition), nl=False)
