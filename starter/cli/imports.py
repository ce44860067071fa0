"""`cairn import FILE [--journey KEY]`: contacts (and journey entries) from a CSV file.

Applies the good rows with a progress bar, then lists every bad row with its line number and
reason. Exits 1 when any row was bad (the good ones are applied all the same), so a script notices;
importing the same file again changes nothing. Entries for `--journey` are routed into Temporal
at once; when Temporal does not answer they are stored and the relay of `cairn dev` / `cairn api`
routes them later.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import errors, fail, load_settings, output

if TYPE_CHECKING:
    from cairn.events.imports import ImportSummary
    from cairn.settings import Settings

async def run_import(settings: Settings, content: bytes, journey: str | None) -> ImportSummary:
    """Open the store (and Temporal, if it answers), import with a progress bar, close."""
    from datetime import timedelta

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cairn.events.imports import check_journey, import_csv
    from cairn.events.ingest import Ingest
    from cairn.events.profile_rules import ProfileRules
    from cairn.events.router import Router
    from cairn.store.db import Store
    from starter.schedules import entry_config
    from starter.temporal import TemporalConnectionError, connect

    store = await Store.open(settings.store_url)
    store.use_address_key(settings.address_key())
    try:
        if journey is not None:
            await check_journey(store, journey)  # before connecting: a typo fails fast
        router: Router | None = None
        try:
            client = await connect(settings, timeout=timedelta(seconds=5))
            router = Router(client, store, task_queue=settings.journey_task_queue,
                            delivery_task_queue=settings.delivery_task_queue)
        except TemporalConnectionError:
            if journey is not None:
                errors.print(f"[yellow]Temporal at {settings.temporal_address} does not "
                             "answer; entries are stored and start when `cairn dev` or "
                             "`cairn api` runs.[/yellow]", highlight=False)
        ingest = Ingest(store, router,
                        profile_rules=ProfileRules.from_folder(store, settings.journeys_dir),
                        attribute_changes=True)
        with Progress(TextColumn("[bold]importing"), BarColumn(), MofNCompleteColumn(),
                      console=errors, transient=False) as bar:
            task = bar.add_task("rows", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary, _ = await import_csv(ingest, content, journey=journey,
                                          route=router is not None, progress=advance,
                                          entries=entry_config(settings))
        return summary
    finally:
        await store.close()


def _report(summary: ImportSummary) -> None:
    console = output()
    target = f" into journey {summary.journey}" if summary.journey else ""
    console.print(
        f"import {summary.import_id}{escape(target)}: {summary.rows} row(s), "
        f"[green]{summary.applied} applied[/green], {summary.duplicates} already imported, "
        f"[red]{summary.skipped} bad[/red]", highlight=False)
    if summary.errors:
        table = Table(title="bad rows (not applied)")
        table.add_column("line", justify="right")
        table.add_column("problem")
        for problem in summary.errors:
            table.add_row(str(problem.line), escape(problem.message))
        console.print(table)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV file: a header row, then one contact per row",
                                         exists=True, dir_okay=False, readable=True)],
    journey: Annotated[str | None, typer.Option(
        "--journey", "-j", help="start this journey (trigger: {imported: true}) for each good "
                                "row")] = None,
) -> None:
    """Import contacts from CSV: `userId` (or `user_id`, or `email`) identifies each, the other
    columns become traits. Bad rows are listed with their line and skipped (exit code 1)."""
    from cairn.events.imports import ImportFileError, ImportJourneyError
    from starter.temporal import TemporalConnectionError

    settings = load_settings()
    try:
        content = file.read_bytes()
    except OSError as error:
        raise fail(f"cannot read {file}: {error}") from None
    try:
        summary = asyncio.run(run_import(settings, content, journey))
    except (ImportFileError, ImportJourneyError, TemporalConnectionError) as error:
        raise fail(f"{file}: {error}" if isinstance(error, ImportFileError) else str(error)) \
            from None
    _report(summary)
    if summary.errors:
        raise typer.Exit(1)
