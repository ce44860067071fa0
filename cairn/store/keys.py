"""API keys: create, list, revoke, and find the key a request presents.

A key has a name (for people: `backend-prod`, `segment-source`), a scope and a secret. Only the
SHA-256 of the secret is stored. A slow password hash (bcrypt, scrypt) protects secrets people
choose, which are guessable; these secrets are 256 random bits made by `secrets`, so no table of
guesses can reach them and a fast hash loses nothing, while it keeps the lookup cheap enough for
every ingest call. The hash is also the lookup key (a unique index), and the found row is compared
again with `hmac.compare_digest`, so the check takes the same time whatever the secret's prefix.

Scopes: `write` (the ingest calls), `read` (the read views), `admin` (everything). `admin` grants
`read` and `write`; `read` and `write` grant nothing but themselves: a dashboard's read key
cannot inject events, and a source's write key cannot read contacts back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import ApiKey

Scope = Literal["write", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
SECRET_PREFIX = "cairn_"
"""Every secret starts so: a secret pasted in the wrong place is recognisable (secret scanners)."""


class KeyRefused(ValueError):
    """A key cannot be created or revoked as asked; the message says why."""


def grants(held: str, needed: str) -> bool:
    """Whether a key of scope `held` may call a route that needs `needed`."""
    return held == needed or held == "admin"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def create_key(s: AsyncSession, name: str, scope: str, now: datetime) -> str:
    """Store a new key and answer its secret, which exists nowhere else afterwards."""
    if scope not in SCOPES:
        raise KeyRefused(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    name = name.strip()
    if not name or len(name) > 128:
        raise KeyRefused("a key's name is 1 to 128 characters")
    if await key_named(s, name) is not None:
        raise KeyRefused(f"a key named {name!r} exists already: choose another name (names of "
                        "revoked keys stay taken, so logs keep meaning one key)")
    secret = new_secret()
    s.add(ApiKey(name=name, scope=scope, secret_hash=secret_hash(secret), created_at=now))
    await s.flush()
    return secret


async def key_named(s: AsyncSession, name: str) -> ApiKey | None:
    return (await s.execute(select(ApiKey).where(ApiKey.name == name))).scalar_one_or_none()


async def all_keys(s: AsyncSession) -> list[ApiKey]:
    return list((await s.execute(select(ApiKey).order_by(ApiKey.id))).scalars())


async def revoke_key(s: AsyncSession, name: str, now: datetime) -> ApiKey:
    """Revoke the key named `name` (a revoked key stays listed); KeyRefused if there is none."""
    key = await key_named(s, name)
    if key is None:
        raise KeyRefused(f"no key named {name!r}: `cairn keys list` shows the names")
    if key.revoked_at is None:
        key.revoked_at = now
        await s.flush()
    return key


async def key_with_secret(s: AsyncSession, secret: str) -> ApiKey | None:
    """The key whose secret this is, revoked or not; None for an unknown secret."""
    digest = secret_hash(secret)
    key = (await s.execute(select(ApiKey).where(ApiKey.secret_hash == digest))).scalar_one_or_none()
    if key is None or not hmac.compare_digest(key.secret_hash, digest):
        return None
    return key


async def mark_used(s: AsyncSession, key_id: int, now: datetime) -> None:
    await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
