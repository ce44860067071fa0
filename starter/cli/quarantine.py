"""`cairn quarantine`: events whose routing kept failing, and putting them back in line."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import load_settings, output, with_store

if TYPE_CHECKING:
    from cairn.events.quarantine import QuarantinedEvent
    from cairn.store.db import Store


@app.command("quarantine")
def quarantine_command(
    retry: Annotated[int | None, typer.Option(
        "--retry", help="put this event (its id) back in line for routing")] = None,
    retry_all: Annotated[bool, typer.Option(
        "--all", help="with no --retry: put every quarantined event back in line")] = False,
    limit: Annotated[int, typer.Option(help="how many to list")] = 50,
) -> None:
    """List events set aside after repeated routing failures, or re-drive them after a fix."""
    from cairn.events import quarantine

    if retry is not None or retry_all:
        ids = None if retry is None else [retry]

        async def release(store: Store) -> list[int]:
            return await quarantine.release(store, ids)

        released = asyncio.run(with_store(load_settings(), release))
        if retry is not None and not released:
            output().print(f"no quarantined event {retry}")
            raise typer.Exit(1)
        output().print(f"released {len(released)} event(s): the relay of `cairn dev` / "
                       "`cairn api` routes them on its next pass")
        return

    async def collect(store: Store) -> list[QuarantinedEvent]:
        return await quarantine.quarantined(store, limit=limit)

    rows = asyncio.run(with_store(load_settings(), collect))
    if not rows:
        output().print("no quarantined events")
        return
    table = Table(title="quarantined events")
    for column in ("id", "message id", "contact", "event", "attempts", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row.id), row.message_id, row.contact_id, row.event,
                      str(row.attempts), row.error or "-")
    output().print(table)
