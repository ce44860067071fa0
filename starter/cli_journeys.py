"""`cairn validate` and `cairn graph`: check journey files before publishing them, and draw them.

Both work on files alone (no Temporal, no database), so they run in CI and in editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    for problem in result.problems:
        typer.echo(str(problem))
    if result.problems:
        typer.echo(f"{len(result.problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    for path, journey in result.journeys:
        typer.echo(f"OK {path}: {journey.key} ({len(journey.steps)} steps)")


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
