"""`cairn publish`, `cairn journeys`, `cairn runs` and `cairn exit`: the catalog and who is where.

`publish` validates a folder of journeys and stores new versions; `journeys` lists what is
published with per-step counts (from Temporal's visibility when a server answers, else the open
entries recorded in the store); `runs` pages through running runs from visibility and shows one
run's path and wait (its `state` query) when one run or one contact is asked for; `exit` removes
contacts from a journey by signalling its runs. Heavy imports stay inside the commands so
`cairn --help` stays fast.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine, Iterable
from datetime import datetime
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


async def step_counts(client: Client, journey_key: str,
                      steps: Iterable[str] | None = None) -> Counter[str]:
    """Running runs of a journey per current step, from Temporal's visibility (CairnStep)."""
    from cairn.run_views import step_counts as counted

    return await counted(client, journey_key, steps)


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
            open_counts = await entries_repo.open_entry_counts(session)
        client = await _maybe_client(settings) if rows else None
        per_journey: list[Counter[str] | None] = [None] * len(rows)
        if client is not None:
            try:  # every journey's counts at once: the server answers them in parallel
                per_journey = list(await asyncio.gather(*(
                    step_counts(client, row.key, (row.definition.get("steps") or {}).keys())
                    for row in rows)))
            except RPCError as error:  # e.g. a server without advanced visibility
                errors.print(f"[yellow]Temporal cannot list runs ({error.message}); "
                             "showing what the store knows.[/yellow]", highlight=False)
                per_journey = [None] * len(rows)
        return [(row, open_counts.get(row.key, 0), steps)
                for row, steps in zip(rows, per_journey, strict=True)]

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
    from cairn.run_views import describe_run, run_detail

    view = await run_detail(client, workflow_id)
    if view is None:
        row = await describe_run(client, workflow_id)
        if row is None:
            return "-", "run not found", "-"
        return row.step or "?", "(no worker answered the state query)", "-"
    return view.current_step or "-", view.waiting_for or "-", _when(view.until)


@app.command()
def runs(
    workflow_id: Annotated[str | None, typer.Argument(
        help="one run's workflow id (journey/KEY/CONTACT...): its path and what it waits for")
    ] = None,
    journey: Annotated[str | None, typer.Option(help="only this journey key")] = None,
    contact: Annotated[str | None, typer.Option(
        help="only this contact id (each run's detail from its state query)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="runs per page")] = 50,
    page_token: Annotated[str | None, typer.Option(
        "--page-token", "--next", help="the token the previous page printed")] = None,
    finished: Annotated[bool, typer.Option(
        "--finished/--running", help="also list runs that have ended")] = False,
) -> None:
    """Who is where: running journey runs with their current step, a page at a time.

    Lists come from Temporal's visibility (search attributes), so they answer at once however
    many runs there are; what a run waits for and until when (its `state` query) is shown for
    one run (WORKFLOW_ID) or one contact's runs (--contact)."""
    if workflow_id is not None:
        _run(_show_run(load_settings(), workflow_id))
        return
    settings = load_settings()
    page = _run(_runs_page(settings, journey, contact, limit, page_token, finished))
    if page is None:
        _store_runs(settings, journey, contact, limit)
        return
    rows, details, next_token, total = page
    if not rows:
        errors.print("nobody is in a journey" + (f" {journey}" if journey else "")
                     + (f" for contact {contact}" if contact else ""))
        return
    table = Table(title="journey runs" + (f" ({total} running)" if total is not None else ""))
    columns = ["journey", "contact", "step", "started", "workflow id"]
    if details is not None:
        columns[3:3] = ["waiting for", "until"]
    if finished:
        columns.append("status")
    for column in columns:
        table.add_column(column)
    for index, row in enumerate(rows):
        cells = [f"{row.journey or '?'} v{row.version or '?'}", row.contact or "?",
                 row.step or "?", _when(row.started_at), row.workflow_id]
        if details is not None:
            view = details[index]
            cells[3:3] = ([view.waiting_for or "-", _when(view.until)] if view is not None
                          else ["(no worker answered the state query)", "-"])
        if finished:
            cells.append(row.status)
        table.add_row(*cells)
    output().print(table)
    if next_token:
        again = " ".join(["cairn runs"] + ([f"--journey {journey}"] if journey else [])
                         + ([f"--contact {contact}"] if contact else [])
                         + ([f"--limit {limit}"] if limit != 50 else [])
                         + (["--finished"] if finished else []))
        errors.print(f"more: {again} --next {next_token}", highlight=False, soft_wrap=True)


async def _runs_page(
    settings: Settings, journey: str | None, contact: str | None, limit: int,
    page_token: str | None, finished: bool,
) -> tuple[list[Any], list[Any] | None, str | None, int | None] | None:
    """(rows, their state views when --contact, next token, running total); None without
    Temporal or visibility."""
    from temporalio.service import RPCError

    from cairn import run_views

    try:
        run_views.decode_token(page_token)  # a bad token fails before connecting
    except run_views.PageTokenError as error:
        raise fail(str(error)) from None
    client = await _maybe_client(settings)
    if client is None:
        return None
    try:
        listing = run_views.list_runs(
            client, journey=journey, contact=contact, page_size=limit,
            page_token=page_token, running_only=not finished)
        if page_token or contact:
            page, total = await listing, None
        else:  # the page and the total at the same time
            page, total = await asyncio.gather(listing, run_views.count_runs(client, journey))
    except RPCError as error:
        errors.print(f"[yellow]Temporal cannot list runs ({error.message}); "
                     "showing what the store knows.[/yellow]", highlight=False)
        return None
    details = None
    if contact is not None:
        details = [await run_views.run_detail(client, row.workflow_id) for row in page.rows]
    return page.rows, details, page.next_page_token, total


async def _show_run(settings: Settings, workflow_id: str) -> None:
    """One run: where it is, what it waits for, and the path that brought it there."""
    from cairn import run_views
    from starter.temporal import connect

    client = await connect(settings)
    row = await run_views.describe_run(client, workflow_id)
    if row is None:
        raise fail(f"Temporal has no run {workflow_id!r} (ids look like journey/KEY/CONTACT; "
                   "`cairn runs --contact ID` lists a contact's)")
    view = await run_views.run_detail(client, workflow_id)
    console = output()
    console.print(f"{workflow_id}: {row.journey} v{row.version}, contact {row.contact}, "
                  f"{row.status}, started {_when(row.started_at)}", highlight=False)
    if view is None:
        console.print(f"step {row.step or '?'} (no worker answered the state query)",
                      highlight=False)
        return
    console.print(f"step {view.current_step or '-'}, waiting for {view.waiting_for or '-'} "
                  f"until {_when(view.until)}" + (f", outcome {view.outcome}" if view.outcome
                                                  else "") + f", run {view.runs}",
                  highlight=False)
    table = Table(title="path" + (f" (and {view.path_dropped} earlier steps, summarised below)"
                                  if view.path_dropped else ""))
    for column in ("at", "step", "kind", "note"):
        table.add_column(column)
    for entry in view.path:
        table.add_row(_when(entry.at), entry.step, entry.kind or "-", entry.note or "-")
    console.print(table)
    summary = view.earlier
    if summary:
        earlier = Table(title="earlier steps")
        for column in ("step", "times", "first", "last"):
            earlier.add_column(column)
        for item in summary:
            earlier.add_row(item.step, str(item.count), _when(item.first_at), _when(item.last_at))
        console.print(earlier)


def _store_runs(settings: Settings, journey: str | None, contact: str | None,
                limit: int) -> None:
    """Without Temporal: the open entries the store recorded, at most `limit`."""
    from cairn.store import entries as entries_repo

    async def collect(store: Store) -> list[Entry]:
        async with store.session() as session:
            return await entries_repo.open_entries(session, journey, contact, limit=limit)

    rows = _run(with_store(settings, collect))
    if not rows:
        errors.print("nobody is in a journey" + (f" {journey}" if journey else "")
                     + (f" for contact {contact}" if contact else ""))
        return
    table = Table(title="open entries (from the store; Temporal unreachable)")
    for column in ("journey", "contact", "entry key", "entered", "workflow id"):
        table.add_column(column)
    for row in rows:
        table.add_row(f"{row.journey_key} v{row.version}", row.contact_id, row.entry_key or "-",
                      _when(row.entered_at), row.workflow_id)
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
