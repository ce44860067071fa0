"""`cairn entries`: failed entries (runs that failed, were terminated or timed out), re-entry.

`cairn entries` lists failed entries with their reason (`--open` lists runs in progress);
`cairn entries --sweep` asks Temporal now about open entries whose run ended without closing
them (the hourly segment sweep does it too); `cairn entries --reenter ID` puts the contact of a
failed entry back into its journey (the published version now). See `cairn.reentry`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import fail, load_settings, output, with_store

if TYPE_CHECKING:
    from temporalio.client import Client

    from cairn.settings import Settings
    from cairn.store.db import Store
    from cairn.store.schema import Entry


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@app.command()
def entries(
    failed: Annotated[bool, typer.Option(
        "--failed/--open", help="failed entries (default) or runs in progress")] = True,
    journey: Annotated[str | None, typer.Option(help="one journey key")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many")] = 50,
    reenter: Annotated[int | None, typer.Option(
        "--reenter", min=1, help="put the contact of this failed entry back into its journey")
    ] = None,
    sweep: Annotated[bool, typer.Option(
        "--sweep", help="first close the entries of runs Temporal reports failed, terminated "
                        "or timed out")] = False,
) -> None:
    """List failed entries (with why), or re-enter one after a fix."""
    settings = load_settings()
    if reenter is not None:
        _reenter(settings, reenter)
        return
    if sweep:
        _sweep(settings)
    from cairn.store import entries as entries_repo

    async def collect(store: Store) -> list[Entry]:
        async with store.session() as session:
            if failed:
                return await entries_repo.failed_entries(session, journey, limit)
            return (await entries_repo.open_entries(session, journey))[:limit]

    rows = asyncio.run(with_store(settings, collect))
    if not rows:
        output().print(f"No {'failed' if failed else 'open'} entries"
                       + (f" in journey {journey}" if journey else ""))
        return
    table = Table(title=f"{'failed' if failed else 'open'} entries")
    columns = ("id", "journey", "contact", "entered", "ended", "reason") if failed \
        else ("id", "journey", "contact", "entered", "run")
    for column in columns:
        table.add_column(column)
    for row in rows:
        if failed:
            table.add_row(str(row.id), row.journey_key, row.contact_id, _when(row.entered_at),
                          _when(row.ended_at), row.reason or "")
        else:
            table.add_row(str(row.id), row.journey_key, row.contact_id, _when(row.entered_at),
                          row.workflow_id)
    output().print(table)
    if failed and rows:
        output().print("re-enter one after a fix: cairn entries --reenter ID")


async def _client(settings: Settings) -> Client:
    from starter.temporal import TemporalConnectionError, connect

    try:
        return await asyncio.wait_for(connect(settings), timeout=10)
    except (TemporalConnectionError, TimeoutError) as error:
        raise fail(f"Temporal at {settings.temporal_address} did not answer "
                   f"({type(error).__name__}); start it (cairn dev) or set "
                   "CAIRN_TEMPORAL_ADDRESS") from None


def _sweep(settings: Settings) -> None:
    from cairn.failed_runs import close_failed_runs

    async def work(store: Store) -> int:
        client = await _client(settings)
        closed = await close_failed_runs(store, client, now=datetime.now(UTC))
        return len(closed)

    closed = asyncio.run(with_store(settings, work))
    output().print(f"closed {closed} entr{'y' if closed == 1 else 'ies'} of ended runs as failed")


def _reenter(settings: Settings, entry_id: int) -> None:
    from cairn.events.router import RouteDecision, Router
    from cairn.reentry import EntryNotFound, ReentryRefused, reenter

    async def work(store: Store) -> RouteDecision:
        client = await _client(settings)
        router = Router(client, store, task_queue=settings.journey_task_queue,
                        delivery_task_queue=settings.delivery_task_queue)
        try:
            return (await reenter(store, router, entry_id)).decision
        except (EntryNotFound, ReentryRefused) as error:
            raise fail(str(error)) from None

    decision = asyncio.run(with_store(settings, work))
    output().print(f"entry #{entry_id}: {decision.action} {decision.workflow_id or ''} "
                   f"({decision.reason})")
    if decision.action == "refused":
        raise typer.Exit(1)
