"""`cairn data-keys`: the per-contact payload keys, counted and rewrapped after a master key
rotation (docs/security.md)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from starter.cli.app import app
from starter.cli.common import load_settings, output, with_store

if TYPE_CHECKING:
    from cairn.store.db import Store


@app.command("data-keys")
def data_keys_command(
    rewrap: Annotated[bool, typer.Option(
        "--rewrap", help="wrap every data key under the newest master key "
                         "(the first of CAIRN_MASTER_KEYS)")] = False,
) -> None:
    """Show which master keys wrap the data keys; --rewrap moves them all to the newest one,
    after which the older master keys can be removed from CAIRN_MASTER_KEYS."""
    from sqlalchemy import func, select

    from cairn.privacy.keys import MasterKeyRing, master_keys, rewrap_data_keys
    from cairn.store.schema import DataKey

    settings = load_settings()
    ring = MasterKeyRing(master_keys(settings))

    async def work(store: Store) -> tuple[int, dict[str, int]]:
        moved = await rewrap_data_keys(store, ring) if rewrap else 0
        async with store.session() as s:
            counted = await s.execute(
                select(DataKey.master_key_id, func.count()).where(DataKey.wrapped.is_not(None))
                .group_by(DataKey.master_key_id))
            return moved, {str(key): int(n) for key, n in counted.all()}

    moved, by_master = asyncio.run(with_store(settings, work))
    if rewrap:
        output().print(f"rewrapped {moved} data key(s) under {ring.current.id}")
    for key_id, count in sorted(by_master.items()):
        current = " (newest)" if key_id == ring.current.id else ""
        output().print(f"{key_id}{current}: {count} data key(s)")
    if not by_master:
        output().print("no data keys yet")
