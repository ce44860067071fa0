"""`cairn keys create|list|revoke`: the API's keys, managed in the store directly (no API call,
so no key is needed to make the first one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from starter.cli.app import _Cairn, _Group, app
from starter.cli.common import load_settings, output, run_job, with_store

if TYPE_CHECKING:
    from cairn.store.db import Store
    from cairn.store.schema import ApiKey

keys_app = _Cairn(name="keys", help="API keys: create (the secret is shown once), list, revoke.",
                  no_args_is_help=True, cls=_Group)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who uses it, e.g. backend-prod, segment-source")],
    scope: Annotated[str, typer.Option(
        help="write: the ingest calls; read: the read views; admin: everything")] = "write",
) -> None:
    """Create a key and print its secret, once, as the last line (it is stored only hashed)."""
    from cairn.events.ingest import utc_now
    from cairn.store import keys as keys_repo

    async def make(store: Store) -> str:
        async with store.session() as s, s.begin():
            return await keys_repo.create_key(s, name, scope, utc_now())

    secret = run_job(with_store(load_settings(), make), keys_repo.KeyRefused)
    console = output()
    console.print(f"created key {escape(name)!r} with scope {scope}; its secret is shown only "
                  "now (send it as `Authorization: Bearer KEY`):", highlight=False)
    console.out(secret, highlight=False)


@keys_app.command("list")
def list_keys() -> None:
    """Every key: name, scope, created, last used, revoked (never the secret)."""
    from cairn.store import keys as keys_repo

    async def collect(store: Store) -> list[ApiKey]:
        async with store.session() as s:
            return await keys_repo.all_keys(s)

    rows = run_job(with_store(load_settings(), collect))
    console = output()
    if not rows:
        console.print("No API keys: `cairn keys create NAME --scope write` makes one")
        return
    table = Table(title=f"API keys ({len(rows)})")
    for column in ("name", "scope", "created", "last used", "revoked"):
        table.add_column(column)
    when = "%Y-%m-%d %H:%M:%S"
    for row in rows:
        table.add_row(escape(row.name), row.scope, row.created_at.strftime(when),
                      row.last_used_at.strftime(when) if row.last_used_at else "-",
                      row.revoked_at.strftime(when) if row.revoked_at else "-")
    console.print(table)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="the key's name (`cairn keys list`)")]) -> None:
    """Revoke a key: the API refuses it from now on (a running API within 10 seconds)."""
    from cairn.events.ingest import utc_now
    from cairn.store import keys as keys_repo

    async def withdraw(store: Store) -> None:
        async with store.session() as s, s.begin():
            await keys_repo.revoke_key(s, name, utc_now())

    run_job(with_store(load_settings(), withdraw), keys_repo.KeyRefused)
    output().print(f"revoked key {escape(name)!r}", highlight=False)
