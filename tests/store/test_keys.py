"""API keys in the store: only hashes kept, lookups by secret, revocation, scopes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cairn.store import keys
from cairn.store.db import Store
from cairn.store.schema import ApiKey

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def test_a_key_is_found_by_its_secret_and_only_its_hash_is_stored(store: Store) -> None:
    async with store.session() as s, s.begin():
        secret = await keys.create_key(s, "backend", "write", NOW)
    assert secret.startswith("cairn_") and len(secret) > 40
    async with store.session() as s:
        rows = list((await s.execute(select(ApiKey))).scalars())
        found = await keys.key_with_secret(s, secret)
        unknown = await keys.key_with_secret(s, secret + "x")
    assert [(r.name, r.scope, r.revoked_at) for r in rows] == [("backend", "write", None)]
    assert secret not in repr([vars(r) for r in rows])
    assert rows[0].secret_hash == keys.secret_hash(secret)
    assert found is not None and found.name == "backend"
    assert unknown is None


async def test_names_are_unique_and_scopes_known(store: Store) -> None:
    async with store.session() as s, s.begin():
        await keys.create_key(s, "one", "read", NOW)
        with pytest.raises(keys.KeyRefused, match="exists already"):
            await keys.create_key(s, "one", "admin", NOW)
        with pytest.raises(keys.KeyRefused, match="unknown scope"):
            await keys.create_key(s, "two", "owner", NOW)


async def test_revoking_keeps_the_key_listed_and_marks_it(store: Store) -> None:
    async with store.session() as s, s.begin():
        secret = await keys.create_key(s, "old", "admin", NOW)
        await keys.revoke_key(s, "old", NOW)
        with pytest.raises(keys.KeyRefused, match="no key named"):
            await keys.revoke_key(s, "nobody", NOW)
    async with store.session() as s:
        found = await keys.key_with_secret(s, secret)
        listed = await keys.all_keys(s)
    assert found is not None and found.revoked_at == NOW
    assert [k.name for k in listed] == ["old"]


def test_admin_grants_everything_and_read_and_write_only_themselves() -> None:
    assert [needed for needed in keys.SCOPES if keys.grants("admin", needed)] == list(keys.SCOPES)
    assert [needed for needed in keys.SCOPES if keys.grants("read", needed)] == ["read"]
    assert [needed for needed in keys.SCOPES if keys.grants("write", needed)] == ["write"]
