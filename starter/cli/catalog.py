"""`cairn publish`, `cairn journeys`, `cairn runs` and `cairn exit`: the catalog and who is where.

`publish` validates a folder of journeys and stores new versions; `journeys` lists what is
published with per-step counts (from Temporal's visibility when a server answers, else the open
entries recorded in the store); `runs` shows open entries and their current step (the `state`
query); `exit` removes contacts from a journey by signalling its runs. Heavy imports stay inside
the commands so `cairn --help` stays fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import errors, fail, load_settings, output, run_job, with_store

if TYPE_CHECKING:
    from temporalio.client import Client

    from cairn.settings import Settings
    from cairn.store.db import Store
    from cairn.store.schema import Entry

T = TypeVar("T")

QUERY_TIMEOUT = timedelta(seconds=5)
"""How long `runs` waits for a run to answer `state` (no worker running: it never will)."""


def _run(job: Coroutine[Any, Any, T]) -> T:
    from cairn.catalog import CatalogError
    from starter.temporal import TemporalConnectionError

    return run_job(job, CatalogError, TemporalConnectionError)


async def _maybe_client(settings: Settings) -> Client | None:
    """A Temporal client when a server answers; None (and a note) when it does not."""
    from starter.temporal import TemporalConnectionError, connect

    try:
        return await connect(settings)
    except TemporalConnectionError:
        errors.print(f"[yellow]Temporal at {settings.temporal_address} does not answer; "
                     "showing what the store knows.[/yellow]", highlight=False)
        return None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


# --------------------------------------------------------------------------- publish


@app.command()
def publish(
    folder: Annotated[Path | None, typer.Argument(
        help="folder of journey files (default: CAIRN_JOURNEYS_DIR or journeys/)")] = None,
) -> None:
    """Validate every journey of a folder and publish those that changed as new versions."""
    from cairn.catalog import publish_catalog
    from starter.schedules import register_if_reachable

    settings = load_settings()
    target = folder or settings.journeys_dir
    rows = _run(with_store(settings, lambda store: publish_catalog(store, target)))
    schedules = _run(with_store(settings, lambda s: register_if_reachable(s, settings, target)))
    table = Table(title=f"published from {target}")
    for column in ("journey", "version", "new", "source"):
        table.add_column(column)
    for row, new in rows:
        table.add_row(row.key, str(row.version), "yes" if new else "no (unchanged)",
                      row.source or "-")
    output().print(table)
    if not rows:
        errors.print(f"no journey files (*.yaml, *.yml, *.json) in {target}")
    if schedules is not None:
        output().print(f"schedules registered on Temporal: {', '.join(schedules)}")


# --------------------------------------------------------------------------- journeys


async def step_counts(client: Client, journey_key: str) -> Counter[str]:
    """Running entries of a journey per current step, from Temporal's visibility (CairnStep)."""
    from cairn import search_attributes

    counts: Counter[str] = Counter()
    query = (f"{search_attributes.JOURNEY.name} = '{_quoted(journey_key)}' "
             "AND ExecutionStatus = 'Running'")
    async for run in client.list_workflows(query):
        counts[run.typed_search_attributes.get(search_attributes.STEP) or "?"] += 1
    return counts


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


@app.command()
def journeys() -> None:
    """List published journeys with how many contacts are in each step right now."""
    from temporalio.service import RPCError

    from cairn.store import entries as entries_repo
    from cairn.store import journeys as journeys_repo

    settings = load_settings()

    async def collect(store: Store) -> list[tuple[Any, int, Counter[str] | None]]:
        async with store.session() as session:
            rows = await journeys_repo.published(session)
            open_rows = await entries_repo.open_entries(session)
        open_counts = Counter(entry.journey_key for entry in open_rows)
        client = await _maybe_client(settings) if rows else None
        listed = []
        for row in rows:
            steps = None
            if client is not None:
                try:
                    steps = await step_counts(client, row.key)
                except RPCError as error:  # e.g. a server without advanced visibility
                    errors.print(f"[yellow]Temporal cannot list runs ({error.message}); "
                                 "showing what the store knows.[/yellow]", highlight=False)
                    client = None
            listed.append((row, open_counts[row.key], steps))
        return listed

    listed = _run(with_store(settings, collect))
    table = Table(title="published journeys")
    for column in ("journey", "version", "name", "trigger", "open entries", "per step"):
        table.add_column(column)
    for row, open_count, steps in listed:
        per_step = ("n/a (needs Temporal visibility)" if steps is None
                    else ", ".join(f"{step}: {n}" for step, n in sorted(steps.items())) or "-")
        trigger = (row.definition.get("trigger") or {}).get("event", "-")
        table.add_row(row.key, str(row.version), row.name, trigger, str(open_count), per_step)
    output().print(table)


# --------------------------------------------------------------------------- runs


async def current_step(client: Client, workflow_id: str) -> tuple[str, str, str]:
    """(step, waiting for, until) of a run: its `state` query, else its CairnStep attribute."""
    from temporalio.service import RPCError

    from cairn import search_attributes
    from cairn.journey_run import STATE_QUERY, JourneyStateView

    handle = client.get_workflow_handle(workflow_id)
    try:
        view = await handle.query(STATE_QUERY, result_type=JourneyStateView,
                                  rpc_timeout=QUERY_TIMEOUT)
    except RPCError as error:
        try:
            description = await handle.describe()
        except RPCError:
            return "-", f"run not found ({error.message})", "-"
        step = description.typed_search_attributes.get(search_attributes.STEP) or "?"
        return step, "(no worker answered the state query)", "-"
    return view.current_step or "-", view.waiting_for or "-", _when(view.until)


@app.command()
def runs(
    journey: Annotated[str | None, typer.Option(help="only this journey key")] = None,
    contact: Annotated[str | None, typer.Option(help="only this contact id")] = None,
) -> None:
    """Who is where: open entries with their current step and what they wait for."""
    from cairn.store import entries as entries_repo

    settings = load_settings()

    async def collect(store: Store) -> list[tuple[Entry, tuple[str, str, str] | None]]:
        async with store.session() as session:
            rows = await entries_repo.open_entries(session, journey, contact)
        client = await _maybe_client(settings) if rows else None
        return [(row, await current_step(client, row.workflow_id) if client else None)
                for row in rows]

    listed = _run(with_store(settings, collect))
    if not listed:
        errors.print("nobody is in a journey" + (f" {journey}" if journey else "")
                     + (f" for contact {contact}" if contact else ""))
        return
    table = Table(title="open entries")
    for column in ("journey", "contact", "entry key", "entered", "step", "waiting for", "until"):
        table.add_column(column)
    for row, where in listed:
        step, waiting, until = where or ("?", "(Temporal unreachable)", "-")
        table.add_row(f"{row.journey_key} v{row.version}", row.contact_id, row.entry_key or "-",
                      _when(row.entered_at), step, waiting, until)
    output().print(table)


# --------------------------------------------------------------------------- exit


async def exit_runs(client: Client, workflow_ids: Iterable[str], reason: str) -> tuple[int, int]:
    """Signal `exit` to each run; returns (signalled, already ended)."""
    from temporalio.service import RPCError, RPCStatusCode

    from cairn.journey_run import EXIT_SIGNAL, ExitRequest

    signalled = gone = 0
    for workflow_id in dict.fromkeys(workflow_ids):
        try:
            await client.get_workflow_handle(workflow_id).signal(
                EXIT_SIGNAL, ExitRequest(reason=reason))
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            gone += 1
        else:
            signalled += 1
    return signalled, gone


@app.command("exit")
def exit_command(
    journey: Annotated[str, typer.Option(help="journey key")],
    contact: Annotated[list[str] | None, typer.Option(
        help="contact id; repeat for several")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every contact in the journey")] = False,
    reason: Annotated[str, typer.Option(help="recorded in the run's path")] =
        "removed by operator",
) -> None:
    """Remove contacts from a journey: their runs leave at once, whatever step they are in."""
    from starter.temporal import connect

    if bool(contact) == all_:
        raise fail("give --contact ID (repeatable) or --all, not both and not neither")
    settings = load_settings()

    async def work(store: Store) -> tuple[int, int]:
        from cairn.store import entries as entries_repo

        async with store.session() as session:
            if all_:
                rows = await entries_repo.open_entries(session, journey)
            else:
                rows = [row for cid in contact or []
                        for row in await entries_repo.open_entries(session, journey, cid)]
        if not rows:
            return 0, 0
        client = await connect(settings)
        return await exit_runs(client, (row.workflow_id for row in rows), reason)

    signalled, gone = _run(with_store(settings, work))
    output().print(f"{signalled} run(s) of {journey} told to exit"
                    + (f"; {gone} had already ended" if gone else ""))
