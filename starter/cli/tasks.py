"""`cairn tasks` and `cairn outbox`: what journeys asked people to do, and what they sent."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import load_settings, output, with_store

if TYPE_CHECKING:
    from cairn.store.db import Store


def _when(moment: object) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if hasattr(moment, "strftime") else "-"


@app.command()
def tasks(
    queue: Annotated[str | None, typer.Option(help="only this queue, e.g. sales-calls")] = None,
    status: Annotated[str | None, typer.Option(help="open, claimed or done")] = "open",
) -> None:
    """List tasks created by journeys (`task` steps), newest last."""
    from cairn.store import tasks as task_store

    async def collect(store: Store) -> list[task_store.Task]:
        async with store.session() as session:
            return await task_store.list_tasks(session, queue=queue, status=status)

    rows = asyncio.run(with_store(load_settings(), collect))
    table = Table(title=f"tasks ({status or 'all'})")
    for column in ("id", "queue", "title", "contact", "journey", "due", "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id), row.queue, row.title, row.contact_id or "-", row.journey_key or "-",
            _when(row.due_at), row.status,
        )
    output().print(table)


@app.command()
def outbox(
    limit: Annotated[int, typer.Option(help="how many of the latest deliveries")] = 20,
    mail: Annotated[bool, typer.Option(
        "--mail", help="show the email `cairn dev`'s SMTP sink received (<home>/mail)")] = False,
    status: Annotated[str | None, typer.Option(
        help="only rows with this status, e.g. unconfirmed (outcome unknown), failed")] = None,
) -> None:
    """Show the latest messages and actions recorded in the deliveries ledger, rendered.

    The status is the ledger's: `sent`, `unconfirmed` (the provider call was interrupted and its
    outcome is unknown: kept or sent again by the delivery policy), `failed`, `skipped:*`."""
    if mail:
        _mail(limit)
        return
    from cairn.store import deliveries

    async def collect(store: Store) -> list[deliveries.Delivery]:
        async with store.session() as session:
            return await deliveries.outbox(session, limit=limit, status=status)

    console = Console()
    for row in asyncio.run(with_store(load_settings(), collect)):
        console.rule(
            f"#{row.id} {row.kind} {row.channel or ''} to {row.contact_id or '-'} "
            f"[{row.status}] {_when(row.sent_at or row.created_at)}"
        )
        if row.accepted_at is not None:
            console.print(f"accepted by the provider at {_when(row.accepted_at)}")
        console.print(f"journey {row.journey_key} step {row.step} template {row.template} "
                      f"via {row.provider or '-'} {row.provider_message_id or ''}".rstrip())
        if row.reason:
            console.print(f"[italic]{row.reason}[/italic]")
        for part, text in (row.rendered or {}).items():
            console.print(f"[bold]{part}[/bold]: {text}")


def _mail(limit: int) -> None:
    """The messages in the local SMTP sink, newest last, as a mail client would show them."""
    from cairn.channels.smtp_sink import read_sink

    folder = load_settings().mail_dir
    messages = read_sink(folder)[-limit:]
    console = Console()
    if not messages:
        console.print(f"no mail in {folder} (`cairn dev` sends email there)")
        return
    for message in messages:
        console.rule(f"{message.subject} [{_when(message.received_at)}]")
        console.print(f"From: {message.sender}\nTo: {', '.join(message.to)}")
        unsubscribe = message.headers.get("List-Unsubscribe")
        if unsubscribe:
            console.print(f"List-Unsubscribe: {unsubscribe}")
        console.print(message.text or message.html or "")


@app.command()
def claim(
    task_id: Annotated[int, typer.Argument(help="the task's id (`cairn tasks`)")],
    assignee: Annotated[str, typer.Option("--as", help="who takes it")],
) -> None:
    """Claim an open task."""
    from datetime import UTC, datetime

    from cairn.store import tasks as task_store

    async def claim_it(store: Store) -> str:
        async with store.session() as s, s.begin():
            task = await task_store.claim_task(s, task_id, assignee, datetime.now(UTC))
            return "" if task is None else task.title

    try:
        title = asyncio.run(with_store(load_settings(), claim_it))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    if not title:
        typer.echo(f"no task {task_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"task {task_id} claimed by {assignee}: {title}")


@app.command()
def complete(
    task_id: Annotated[int, typer.Argument(help="the task's id (`cairn tasks`)")],
    outcome: Annotated[str | None, typer.Option(help="what came of it")] = None,
    by: Annotated[str | None, typer.Option("--by", help="who did it")] = None,
) -> None:
    """Complete a task. Its journey hears `task_completed` (routed by the relay of `cairn dev`
    or `cairn api` within seconds)."""
    from datetime import UTC, datetime

    from cairn.store import events
    from cairn.store import tasks as task_store
    from starter.api.tasks import completion_event

    async def complete_it(store: Store) -> tuple[bool, bool]:
        now = datetime.now(UTC)
        async with store.session() as s, s.begin():
            task, changed = await task_store.complete_task(s, task_id, now, outcome=outcome,
                                                           by=by)
            if task is None:
                return False, False
            call = completion_event(task, now) if changed else None
            if call is not None:
                await events.record_event(
                    s, message_id=call.message_id, type="track", contact_id=task.contact_id
                    or "", name=call.event, properties=call.properties, timestamp=now,
                    received_at=now,
                )
            return True, changed

    found, changed = asyncio.run(with_store(load_settings(), complete_it))
    if not found:
        typer.echo(f"no task {task_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"task {task_id} done" + (f" ({outcome})" if outcome else "")
               + ("" if changed else " (it already was)"))
