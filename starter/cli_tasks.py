"""`cairn tasks` and `cairn outbox`: what journeys asked people to do, and what they sent."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from starter.cli_app import app


def _when(moment: object) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if hasattr(moment, "strftime") else "-"


@app.command()
def tasks(
    queue: Annotated[str | None, typer.Option(help="only this queue, e.g. sales-calls")] = None,
    status: Annotated[str | None, typer.Option(help="open, claimed or done")] = "open",
) -> None:
    """List tasks created by journeys (`task` steps), newest last."""
    from cairn.settings import get_settings
    from cairn.store import tasks as task_store
    from cairn.store.db import Store

    async def collect() -> list[task_store.Task]:
        store = await Store.open(get_settings().store_url)
        try:
            async with store.session() as session:
                return await task_store.list_tasks(session, queue=queue, status=status)
        finally:
            await store.close()

    rows = asyncio.run(collect())
    table = Table(title=f"tasks ({status or 'all'})")
    for column in ("id", "queue", "title", "contact", "journey", "due", "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id), row.queue, row.title, row.contact_id or "-", row.journey_key or "-",
            _when(row.due_at), row.status,
        )
    Console().print(table)


@app.command()
def outbox(
    limit: Annotated[int, typer.Option(help="how many of the latest deliveries")] = 20,
) -> None:
    """Show the latest messages and actions recorded in the deliveries ledger, rendered."""
    from cairn.settings import get_settings
    from cairn.store import deliveries
    from cairn.store.db import Store

    async def collect() -> list[deliveries.Delivery]:
        store = await Store.open(get_settings().store_url)
        try:
            async with store.session() as session:
                return await deliveries.outbox(session, limit=limit)
        finally:
            await store.close()

    console = Console()
    for row in asyncio.run(collect()):
        console.rule(
            f"#{row.id} {row.kind} {row.channel or ''} to {row.contact_id or '-'} "
            f"[{row.status}] {_when(row.sent_at or row.created_at)}"
        )
        console.print(f"journey {row.journey_key} step {row.step} template {row.template}")
        for part, text in (row.rendered or {}).items():
            console.print(f"[bold]{part}[/bold]: {text}")
