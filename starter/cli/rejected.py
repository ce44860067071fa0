"""`cairn rejected`: the batch items the API refused while storing the rest of their batch."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import load_settings, output, with_store

if TYPE_CHECKING:
    from cairn.store.db import Store
    from cairn.store.schema import RejectedCall


@app.command()
def rejected(
    limit: Annotated[int, typer.Option(min=1, help="how many, newest first")] = 20,
    endpoint: Annotated[str | None, typer.Option(help="only this endpoint, e.g. /v1/batch")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List refused calls of batches (why, and the call as sent), newest first."""
    from cairn.store import rejected as rejected_repo

    async def collect(store: Store) -> list[RejectedCall]:
        async with store.session() as session:
            return await rejected_repo.latest_rejected(session, limit=limit, endpoint=endpoint)

    rows = asyncio.run(with_store(load_settings(), collect))
    console = output()
    if as_json:
        for row in rows:
            console.out(json.dumps({
                "id": row.id, "endpoint": row.endpoint, "batch_index": row.batch_index,
                "message_id": row.message_id, "reason": row.reason, "call": row.call,
                "received_at": row.received_at.isoformat()}), highlight=False)
        return
    table = Table(title=f"rejected calls ({len(rows)} newest)")
    for column in ("id", "received", "endpoint", "index", "messageId", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row.id), row.received_at.strftime("%Y-%m-%d %H:%M:%S"), row.endpoint,
                      "-" if row.batch_index is None else str(row.batch_index),
                      escape(row.message_id or "-"), escape(row.reason))
    console.print(table)
