"""Master keys and data keys: parsing, the dev key file, rotation, the store's data keys and
their destruction."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload

from cairn.contact import ContactSnapshot
from cairn.privacy.codec import EncryptionCodec, data_key_id
from cairn.privacy.erasure import erase_contact
from cairn.privacy.keys import (
    RECHECK_SECONDS,
    DataKeys,
    ErasedDataKeyError,
    MasterKey,
    MasterKeyError,
    MasterKeyRing,
    SqlDataKeyStore,
    contact_owner,
    format_master_key,
    master_keys,
    new_master_key,
    parse_master_keys,
)
from cairn.settings import Settings
from cairn.store import contacts
from cairn.store.db import Store
from cairn.store.schema import DataKey


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def test_master_keys_parse_newest_first_and_refuse_bad_ones() -> None:
    new, old = os.urandom(32), os.urandom(32)
    keys = parse_master_keys(f"k2:{b64(new)}, k1:{base64.urlsafe_b64encode(old).decode()}")
    assert [(k.id, k.secret) for k in keys] == [("k2", new), ("k1", old)]
    with pytest.raises(MasterKeyError, match="16 bytes; AES-256 needs 32"):
        parse_master_keys(f"short:{b64(os.urandom(16))}")
    with pytest.raises(MasterKeyError, match="id:base64"):
        parse_master_keys(b64(new))
    with pytest.raises(MasterKeyError, match="repeat"):
        parse_master_keys(f"a:{b64(new)},a:{b64(old)}")
    assert "secret" not in repr(keys[0]) and repr(new) not in repr(keys[0])


def test_without_a_setting_a_key_file_is_made_once_owner_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = master_keys(settings)
    path = tmp_path / "home" / "master_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert master_keys(settings) == first
    assert first[0].id.startswith("dev-")


def test_the_setting_wins_over_the_file(tmp_path: Path) -> None:
    key = new_master_key("prod")
    settings = Settings(home=tmp_path, master_keys=SecretStr(format_master_key(key)))
    assert master_keys(settings) == [key]
    assert not (tmp_path / "master_key").exists()


async def test_rotation_old_master_key_still_unwraps_new_one_wraps() -> None:
    old, new = MasterKey("old", os.urandom(32)), MasterKey("new", os.urandom(32))
    before = DataKeys.in_memory(MasterKeyRing([old]))
    alice = await before.for_owner(contact_owner("alice"))
    assert alice.master_key_id == "old"

    after = DataKeys(MasterKeyRing([new, old]), before.store)
    assert (await after.by_id(alice.id)).secret == alice.secret
    bob = await after.for_owner(contact_owner("bob"))
    assert bob.master_key_id == "new"

    dropped = DataKeys(MasterKeyRing([new]), before.store)
    with pytest.raises(MasterKeyError, match="'old' is not in CAIRN_MASTER_KEYS"):
        await dropped.by_id(alice.id)
    wrong = DataKeys(MasterKeyRing([MasterKey("old", os.urandom(32))]), before.store)
    with pytest.raises(MasterKeyError, match="does not unwrap"):
        await wrong.by_id(alice.id)


async def test_data_keys_live_wrapped_in_the_store_and_erasure_destroys_them(
    store: Store,
) -> None:
    ring = MasterKeyRing([new_master_key()])
    writer = DataKeys(ring, SqlDataKeyStore(store))
    alice = await writer.for_owner(contact_owner("alice"))
    assert (await writer.for_owner(contact_owner("alice"))).id == alice.id
    async with store.session() as session:
        row = await session.get(DataKey, alice.id)
        assert row is not None and row.owner == "contact:alice"
        assert row.wrapped is not None and alice.secret not in row.wrapped

    reader = DataKeys(ring, SqlDataKeyStore(url=store.url))  # another process
    assert (await reader.by_id(alice.id)).secret == alice.secret

    assert await writer.destroy_contact("alice") == alice.id
    with pytest.raises(ErasedDataKeyError, match="destroyed when its contact was erased"):
        await writer.by_id(alice.id)
    fresh = DataKeys(ring, SqlDataKeyStore(store))
    with pytest.raises(ErasedDataKeyError):
        await fresh.by_id(alice.id)
    # The contact coming back later gets a new key, never the destroyed one.
    again = await writer.for_owner(contact_owner("alice"))
    assert again.id != alice.id and again.secret != alice.secret
    await (await reader.store.store()).close()  # type: ignore[attr-defined]


async def test_another_process_stops_using_an_erased_key_within_a_second(store: Store) -> None:
    """Two codecs on one store, as two processes: the API erases, the worker's cached key goes
    within `RECHECK_SECONDS` (its cache would otherwise keep it for 30 s)."""
    ring = MasterKeyRing([new_master_key()])
    api = EncryptionCodec(DataKeys(ring, SqlDataKeyStore(store)))
    worker_keys = DataKeys(ring, SqlDataKeyStore(url=store.url))
    worker = EncryptionCodec(worker_keys, owner=contact_owner("bob"))
    async with store.session() as s, s.begin():
        await contacts.create_contact(
            s, ContactSnapshot(id="bob", email="bob@example.com"), datetime.now(UTC))
    [sealed] = await worker.encode([Payload(data=b'"bob\'s cart"')])
    assert (await api.decode([sealed]))[0].data == b'"bob\'s cart"'
    assert (await worker.decode([sealed]))[0].data == b'"bob\'s cart"'  # cached now

    erased = await erase_contact(store, None, "bob")
    assert erased.data_key_destroyed
    started = time.monotonic()
    for codec in (worker, api):  # neither was told: both learn from the store
        while True:
            try:
                await codec.decode([sealed])
            except ErasedDataKeyError:
                break
            assert time.monotonic() - started < RECHECK_SECONDS + 0.5, "still decoding"
            await asyncio.sleep(0.05)
    # nor does the worker encode under the destroyed key: bob returning gets a new one
    [again] = await worker.encode([Payload(data=b'"new"')])
    assert data_key_id(again) != data_key_id(sealed)
    await (await worker_keys.store.store()).close()  # type: ignore[attr-defined]
