"""The keys behind encrypted payloads: master keys (KEKs) wrap per-contact data keys (DEKs).

- **Master keys** come from `CAIRN_MASTER_KEYS` (`id:base64-of-32-bytes`, comma separated, the
  first one newest): the first wraps new data keys, every listed one unwraps. Without the
  setting, a key is generated once under `<home>/master_key` (mode 0600) and reused; `cairn dev`
  runs on that.
- **Data keys** are AES-256 keys, one per contact ("contact:<id>") and one for runs that belong
  to no contact ("system"), stored wrapped in the `data_keys` table (or in memory, for the
  simulator's throwaway stores). Erasing a contact destroys its data key.

`DataKeys` is what the codec uses: it finds or creates a data key and caches it in-process (a
bounded LRU with a short life, so a key destroyed by another process stops being used soon after).
This module does not encrypt payloads (`cairn.privacy.codec` does) and does not erase contacts
(`cairn.privacy.erasure` does).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.private_files import write_private
from cairn.settings import Settings
from cairn.store import data_keys as data_keys_repo
from cairn.store.db import Store, normalized_url
from cairn.store.schema import DataKey

SYSTEM_OWNER = "system"
"""Owner of the data key of runs that are no contact's (sweeps, schedules)."""

MASTER_KEY_FILE = "master_key"
KEY_BYTES = 32
NONCE_BYTES = 12


def contact_owner(contact_id: str) -> str:
    return f"contact:{contact_id}"


class PayloadKeyError(RuntimeError):
    """A payload's key cannot be used; the message says which key and what to do."""


class ErasedDataKeyError(PayloadKeyError):
    """The payload was encrypted under a data key that an erasure destroyed: it is unreadable
    for good, which is the point of erasing."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"data key {key_id!r} was destroyed when its contact was erased; the payload "
            "encrypted under it can no longer be read"
        )
        self.key_id = key_id


class MasterKeyError(PayloadKeyError):
    """A master key is missing or malformed."""


@dataclass(frozen=True)
class MasterKey:
    id: str
    secret: bytes = field(repr=False)


def _decode_secret(text: str, key_id: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        secret = (base64.urlsafe_b64decode(padded) if "-" in text or "_" in text
                  else base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError) as error:
        raise MasterKeyError(
            f"master key {key_id!r} is not base64; generate one with "
            "`python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\"`"
        ) from error
    if len(secret) != KEY_BYTES:
        raise MasterKeyError(
            f"master key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return secret


def parse_master_keys(text: str) -> list[MasterKey]:
    """`id:base64,id:base64,...` (newest first) as master keys; ids must be unique."""
    keys: list[MasterKey] = []
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        key_id, colon, secret = entry.partition(":")
        if not colon or not key_id.strip():
            raise MasterKeyError(
                "each master key is written `id:base64-of-32-bytes` (CAIRN_MASTER_KEYS, comma "
                "separated, newest first)"
            )
        keys.append(MasterKey(key_id.strip(), _decode_secret(secret.strip(), key_id.strip())))
    if not keys:
        raise MasterKeyError("CAIRN_MASTER_KEYS is set but lists no key")
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise MasterKeyError(f"master key ids repeat in CAIRN_MASTER_KEYS: {ids}")
    return keys


def new_master_key(prefix: str = "key") -> MasterKey:
    secret = os.urandom(KEY_BYTES)
    return MasterKey(f"{prefix}-{hashlib.sha256(secret).hexdigest()[:8]}", secret)


def format_master_key(key: MasterKey) -> str:
    return f"{key.id}:{base64.b64encode(key.secret).decode()}"


def master_keys(settings: Settings) -> list[MasterKey]:
    """The master keys of the settings, or the one kept under `<home>/master_key` (created on
    first use, mode 0600)."""
    if settings.master_keys is not None:
        return parse_master_keys(settings.master_keys.get_secret_value())
    path = settings.home / MASTER_KEY_FILE
    if not path.exists():
        # another process of the same home may have made it first
        with contextlib.suppress(FileExistsError):
            write_private(path, format_master_key(new_master_key("dev")) + "\n")
    return parse_master_keys(path.read_text(encoding="utf-8"))


class MasterKeyRing:
    """The master keys: the first wraps, any unwraps what it wrapped."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise MasterKeyError("no master key: set CAIRN_MASTER_KEYS")
        self.keys = keys
        self._by_id = {k.id: k for k in keys}

    @classmethod
    def ephemeral(cls) -> MasterKeyRing:
        """A ring of one fresh key that lives as long as the process (simulations, tests)."""
        return cls([new_master_key("ephemeral")])

    @property
    def current(self) -> MasterKey:
        return self.keys[0]

    def get(self, key_id: str) -> MasterKey:
        key = self._by_id.get(key_id)
        if key is None:
            raise MasterKeyError(
                f"master key {key_id!r} is not in CAIRN_MASTER_KEYS (it has {list(self._by_id)}); "
                "keep a rotated-out key listed until every data key is rewrapped"
            )
        return key

    def wrap(self, key_id: str, secret: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        master = self.current
        return master.id, nonce + AESGCM(master.secret).encrypt(nonce, secret, key_id.encode())

    def unwrap(self, master_id: str, key_id: str, wrapped: bytes) -> bytes:
        master = self.get(master_id)
        try:
            return AESGCM(master.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                                 key_id.encode())
        except InvalidTag as error:
            raise MasterKeyError(
                f"data key {key_id!r} does not unwrap under master key {master_id!r}: the "
                "master key listed under that id is not the one that wrapped it"
            ) from error


@dataclass(frozen=True)
class WrappedKey:
    """A data key as stored: `wrapped` is None once destroyed."""

    id: str
    owner: str
    master_key_id: str | None
    wrapped: bytes | None


class DataKeyStore(Protocol):
    """Where wrapped data keys are kept."""

    async def by_id(self, key_id: str) -> WrappedKey | None: ...
    async def of_owner(self, owner: str) -> WrappedKey | None: ...
    async def add(self, key: WrappedKey) -> WrappedKey: ...
    async def destroy(self, owner: str) -> str | None: ...
    async def erasure_mark(self) -> int: ...


class MemoryDataKeyStore:
    """Data keys in a dict: for the simulator, whose stores are thrown away after each run."""

    def __init__(self) -> None:
        self._keys: dict[str, WrappedKey] = {}
        self._destroyed = 0

    async def by_id(self, key_id: str) -> WrappedKey | None:
        return self._keys.get(key_id)

    async def of_owner(self, owner: str) -> WrappedKey | None:
        return next((k for k in self._keys.values() if k.owner == owner), None)

    async def add(self, key: WrappedKey) -> WrappedKey:
        existing = await self.of_owner(key.owner)
        if existing is not None:
            return existing
        self._keys[key.id] = key
        return key

    async def destroy(self, owner: str) -> str | None:
        existing = await self.of_owner(owner)
        if existing is None:
            return None
        self._keys[existing.id] = WrappedKey(existing.id, f"erased:{existing.id}", None, None)
        self._destroyed += 1
        return existing.id

    async def erasure_mark(self) -> int:
        return self._destroyed


def _wrapped(row: DataKey | None) -> WrappedKey | None:
    if row is None:
        return None
    return WrappedKey(row.id, row.owner, row.master_key_id, row.wrapped)


class SqlDataKeyStore:
    """Data keys in the store's `data_keys` table; the store is opened on first use when only
    its URL is given (a CLI that never encodes a payload never opens it)."""

    def __init__(self, store: Store | None = None, *, url: str | None = None) -> None:
        if store is None and url is None:
            raise ValueError("give a store or its URL")
        self._store = store
        self._url = url
        self._opening = asyncio.Lock()

    @functools.cached_property
    def url(self) -> str:
        """The database the keys are in (as `Store.url` names it); read once (the router asks
        at every write)."""
        return self._store.url if self._store is not None else normalized_url(str(self._url))

    async def store(self) -> Store:
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    assert self._url is not None
                    self._store = await Store.open(self._url)
        return self._store

    async def close(self) -> None:
        """Close the store this opened itself (one given to it stays open)."""
        if self._store is not None and self._url is not None:
            store, self._store = self._store, None
            await store.close()

    async def by_id(self, key_id: str) -> WrappedKey | None:
        async with (await self.store()).session() as s:
            return _wrapped(await data_keys_repo.data_key_by_id(s, key_id))

    async def of_owner(self, owner: str) -> WrappedKey | None:
        async with (await self.store()).session() as s:
            return _wrapped(await data_keys_repo.data_key_of(s, owner))

    async def add(self, key: WrappedKey) -> WrappedKey:
        row = DataKey(id=key.id, owner=key.owner, master_key_id=key.master_key_id,
                      wrapped=key.wrapped, created_at=datetime.now(UTC))
        async with (await self.store()).session() as s, s.begin():
            stored = _wrapped(await data_keys_repo.add_data_key(s, row))
        assert stored is not None
        return stored

    async def destroy(self, owner: str) -> str | None:
        async with (await self.store()).session() as s, s.begin():
            return await data_keys_repo.destroy_data_key(s, owner, datetime.now(UTC))

    async def erasure_mark(self) -> int:
        async with (await self.store()).session() as s:
            return await data_keys_repo.erasure_mark(s)


RECHECK_SECONDS = 1.0
"""How long a data key destroyed by another process's erasure may still be used by this one."""


class _Cache:
    """A bounded LRU whose entries live `ttl` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._entries: OrderedDict[str, tuple[float, tuple[str, bytes]]] = OrderedDict()

    def get(self, name: str) -> tuple[str, bytes] | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, name: str, value: tuple[str, bytes]) -> None:
        self._entries[name] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, name: str) -> None:
        self._entries.pop(name, None)

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True)
class DataKeyInUse:
    id: str
    master_key_id: str
    secret: bytes = field(repr=False)


class DataKeys:
    """Data keys for the codec: find or create an owner's key, find a key by id, destroy one.

    The codec runs on every payload, so unwrapped keys are cached in-process (bounded LRU, `ttl`
    seconds). An erasure in another process must stop this one from using the destroyed key
    promptly: before using the cache, at most once every `recheck` seconds, one cheap query reads
    the newest erasure's number (`erasures` primary key); when it moved, the whole cache is
    dropped and keys are read again from the store, where the destroyed one is gone. So a key
    destroyed elsewhere is used here at most `recheck` seconds (1 s) after the erasure committed.
    """

    def __init__(self, ring: MasterKeyRing, store: DataKeyStore, *, cache_size: int = 4096,
                 ttl: float = 30.0, recheck: float = RECHECK_SECONDS) -> None:
        self.ring = ring
        self.store = store
        self.recheck = recheck
        self._by_owner = _Cache(cache_size, ttl)
        self._by_id = _Cache(cache_size, ttl)
        self._creating: dict[str, asyncio.Lock] = {}
        self._erasure_mark: int | None = None
        self._checked_until = 0.0

    async def _drop_if_erased_elsewhere(self, s: AsyncSession | None = None) -> None:
        """Empty the cache if an erasure committed since the last look (see the class); `s`:
        look through the caller's session (on the keys' database) rather than the key store's
        own connections, which may wait for the write lock `s` holds."""
        now = time.monotonic()
        if now < self._checked_until:
            return
        self._checked_until = now + self.recheck
        mark = (await data_keys_repo.erasure_mark(s) if s is not None
                else await self.store.erasure_mark())
        if mark != self._erasure_mark:
            self._by_owner.clear()
            self._by_id.clear()
            self._erasure_mark = mark

    @classmethod
    def in_memory(cls, ring: MasterKeyRing | None = None) -> DataKeys:
        return cls(ring or MasterKeyRing.ephemeral(), MemoryDataKeyStore())

    def _unwrap(self, key: WrappedKey) -> DataKeyInUse:
        if key.wrapped is None or key.master_key_id is None:
            raise ErasedDataKeyError(key.id)
        secret = self.ring.unwrap(key.master_key_id, key.id, key.wrapped)
        self._by_id.put(key.id, (key.master_key_id, secret))
        return DataKeyInUse(key.id, key.master_key_id, secret)

    async def for_owner(self, owner: str) -> DataKeyInUse:
        """The owner's key, created (and stored wrapped) on first use."""
        await self._drop_if_erased_elsewhere()
        cached = self._by_owner.get(owner)
        if cached is not None:
            key_id, _ = cached
            in_use = self._by_id.get(key_id)
            if in_use is not None:
                return DataKeyInUse(key_id, in_use[0], in_use[1])
        lock = self._creating.setdefault(owner, asyncio.Lock())
        async with lock:
            stored = await self.store.of_owner(owner)
            if stored is None:
                key_id = secrets.token_hex(8)
                master_id, wrapped = self.ring.wrap(key_id, AESGCM.generate_key(bit_length=256))
                stored = await self.store.add(WrappedKey(key_id, owner, master_id, wrapped))
            in_use = self._unwrap(stored)
            self._by_owner.put(owner, (in_use.id, b""))
        self._creating.pop(owner, None)
        return in_use

    def stages_in(self, url: str) -> bool:
        """Whether `stage` may write in a transaction on the database at `url`: the keys are
        stored there."""
        return isinstance(self.store, SqlDataKeyStore) and self.store.url == url

    async def stage(self, s: AsyncSession, owner: str) -> WrappedKey | None:
        """The owner's key, found or created inside the caller's transaction `s` (on the keys'
        database, `stages_in`), when this process does not hold it yet; None when it does.

        A caller about to write for a contact anyway (the router recording an entry) saves the
        key's own transaction: the key commits with its write. Hand the key to `adopt` once `s`
        committed, never before (a key used before its row commits could encrypt payloads no
        one can read should the transaction roll back). One statement for a new owner (an
        insert that yields to a key stored meanwhile), two for a stored one.
        """
        await self._drop_if_erased_elsewhere(s)
        if self._held(owner):
            return None
        key_id = secrets.token_hex(8)
        master_id, wrapped = self.ring.wrap(key_id, AESGCM.generate_key(bit_length=256))
        stored = await data_keys_repo.add_data_key(s, DataKey(
            id=key_id, owner=owner, master_key_id=master_id, wrapped=wrapped,
            created_at=datetime.now(UTC)))
        return WrappedKey(stored.id, stored.owner, stored.master_key_id, stored.wrapped)

    def adopt(self, key: WrappedKey) -> None:
        """Hold a key `stage` found or created, its transaction committed."""
        in_use = self._unwrap(key)
        self._by_owner.put(key.owner, (in_use.id, b""))

    def _held(self, owner: str) -> bool:
        cached = self._by_owner.get(owner)
        return cached is not None and self._by_id.get(cached[0]) is not None

    async def by_id(self, key_id: str) -> DataKeyInUse:
        """The key a payload names; `ErasedDataKeyError` if an erasure destroyed it."""
        await self._drop_if_erased_elsewhere()
        cached = self._by_id.get(key_id)
        if cached is not None:
            return DataKeyInUse(key_id, cached[0], cached[1])
        stored = await self.store.by_id(key_id)
        if stored is None:
            raise PayloadKeyError(
                f"data key {key_id!r} is not in this store: the payload was encrypted by a "
                "Cairn on another database (CAIRN_DATABASE_URL) or by a simulation"
            )
        return self._unwrap(stored)

    async def destroy_contact(self, contact_id: str) -> str | None:
        """Destroy the contact's key (erasure) and forget it here; returns its id."""
        owner = contact_owner(contact_id)
        destroyed = await self.store.destroy(owner)
        self.forget(owner, destroyed)
        return destroyed

    def forget(self, owner: str, key_id: str | None) -> None:
        self._by_owner.drop(owner)
        if key_id is not None:
            self._by_id.drop(key_id)


def data_keys_for(settings: Settings, store: Store | None = None) -> DataKeys | None:
    """The data keys of the settings' store (`store` if open already, else opened on first
    use); None when CAIRN_PAYLOAD_ENCRYPTION is off."""
    if not settings.payload_encryption:
        return None
    ring = MasterKeyRing(master_keys(settings))
    return DataKeys(ring, SqlDataKeyStore(store, url=None if store else settings.store_url))


async def rewrap_data_keys(store: Store, ring: MasterKeyRing, *, batch: int = 500) -> int:
    """Wrap every live data key under the ring's current (first) master key, so the master keys
    after it can be dropped from CAIRN_MASTER_KEYS; returns how many keys were rewrapped. The
    data keys themselves do not change, so no payload needs re-encrypting."""
    total = 0
    while True:
        async with store.session() as s, s.begin():
            rows = await data_keys_repo.wrapped_data_keys(s, not_under=ring.current.id,
                                                          limit=batch)
            for row in rows:
                assert row.master_key_id is not None and row.wrapped is not None
                secret = ring.unwrap(row.master_key_id, row.id, row.wrapped)
                row.master_key_id, row.wrapped = ring.wrap(row.id, secret)
        total += len(rows)
        if len(rows) < batch:
            return total
