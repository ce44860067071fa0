"""`cairn dev`'s development keys: made once, kept in a 0600 file, reused, replaced when stale."""

from __future__ import annotations

import stat
from pathlib import Path

from cairn.events.ingest import utc_now
from cairn.settings import Settings
from cairn.store import keys as keys_repo
from cairn.store.db import Store
from starter.dev import dev_keys


async def test_dev_keys_are_made_once_kept_0600_and_reused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".cairn")
    store = await Store.open(settings.store_url)
    try:
        first = await dev_keys(settings, store)
        assert stat.S_IMODE(first.file.stat().st_mode) == 0o600
        assert first.file.read_text() == (f"export CAIRN_WRITE_KEY={first.write}\n"
                                          f"export CAIRN_ADMIN_KEY={first.admin}\n")
        again = await dev_keys(settings, store)
        assert (again.write, again.admin) == (first.write, first.admin)

        first.file.chmod(0o644)
        async with store.session() as s, s.begin():
            await keys_repo.revoke_key(s, "dev-admin", utc_now())
        replaced = await dev_keys(settings, store)
        async with store.session() as s:
            write = await keys_repo.key_with_secret(s, replaced.write)
            admin = await keys_repo.key_with_secret(s, replaced.admin)
    finally:
        await store.close()
    assert replaced.write == first.write and replaced.admin != first.admin
    assert write is not None and (write.name, write.scope) == ("dev-write", "write")
    assert admin is not None and (admin.name, admin.scope, admin.revoked_at) == (
        "dev-admin-2", "admin", None)
    assert stat.S_IMODE(replaced.file.stat().st_mode) == 0o600
