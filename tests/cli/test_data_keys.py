"""`cairn data-keys --rewrap`: after a master key rotation every data key moves under the newest
master key, so the old one can be dropped and every payload still decrypts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cairn.privacy.keys import (
    DataKeys,
    MasterKeyRing,
    SqlDataKeyStore,
    contact_owner,
    format_master_key,
    new_master_key,
)
from cairn.settings import get_settings
from cairn.store.db import Store
from starter.cli.main import app


async def _cli(*args: str) -> Result:
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, ["data-keys", *args])
    finally:
        get_settings.cache_clear()


async def test_rewrap_moves_every_key_to_the_newest_master_key(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_master_key("old"), new_master_key("new")
    before = DataKeys(MasterKeyRing([old]), SqlDataKeyStore(sqlite_store))
    made = [await before.for_owner(contact_owner(c)) for c in ("ana", "bob", "cy")]
    monkeypatch.setenv("CAIRN_DATABASE_URL", sqlite_store.url)
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path))
    monkeypatch.setenv("CAIRN_MASTER_KEYS", f"{format_master_key(new)},{format_master_key(old)}")

    listed = await _cli()
    assert listed.exit_code == 0, listed.output
    assert f"{old.id}: 3 data key(s)" in listed.output

    moved = await _cli("--rewrap")
    assert moved.exit_code == 0, moved.output
    assert f"rewrapped 3 data key(s) under {new.id}" in moved.output
    assert f"{new.id} (newest): 3 data key(s)" in moved.output

    only_new = DataKeys(MasterKeyRing([new]), SqlDataKeyStore(sqlite_store))
    for key in made:
        assert (await only_new.by_id(key.id)).secret == key.secret
    assert (await _cli("--rewrap")).output.startswith("rewrapped 0 data key(s)")
