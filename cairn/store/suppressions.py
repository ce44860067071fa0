"""What closes a channel for a contact: suppression (bounce, complaint, STOP), dead push tokens,
and unsubscribes from marketing or from one topic.

Each change is written on the contact row itself, because reachability reads only the contact
snapshot: the next send plan sees it without another query.

Erasing a contact deletes its row and its addresses, but a bounce, a complaint or a STOP must
outlive it: the same address coming back (a re-subscribe, an import) must stay suppressed. So
erasure keeps each suppressed channel as `erased_suppressions` rows holding an HMAC-SHA256 of
the normalised address under a server key (`Store.use_address_key`, from the workspace key),
never the address; an address given to a contact later is looked up by its hash
(`recall_erased`) and suppressed again. Without the key nobody can tell which address a row was
for, even holding the whole database.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.reachability import normalised_phone
from cairn.store.db import ADDRESS_KEY, insert_once
from cairn.store.schema import Contact, ErasedSuppression

ADDRESS_OF: dict[str, str] = {"email": "email", "sms": "phone", "whatsapp": "phone"}
"""The contact column each suppressible channel sends to."""


async def _contact(s: AsyncSession, contact_id: str) -> Contact | None:
    """The row read fresh under its write lock (the no-op UPDATE of `contacts.locked_contact`, which
    works on SQLite and PostgreSQL alike)."""
    locked = await s.execute(
        update(Contact).where(Contact.id == contact_id).values(updated_at=Contact.updated_at)
        .execution_options(synchronize_session=False)
    )
    if getattr(locked, "rowcount", 1) == 0:
        return None
    return await s.get(Contact, contact_id, populate_existing=True)


def _touch(contact: Contact, now: datetime | None) -> None:
    if now is not None:
        contact.updated_at = now


async def suppress(
    s: AsyncSession, contact_id: str, channel: str, now: datetime | None = None,
) -> bool:
    """Close `channel` for every message (hard bounce, complaint, SMS STOP). False if it was."""
    contact = await _contact(s, contact_id)
    if contact is None or channel in contact.suppressed:
        return False
    contact.suppressed = [*contact.suppressed, channel]
    _touch(contact, now)
    return True


async def drop_push_token(
    s: AsyncSession, contact_id: str, token: str, now: datetime | None = None,
) -> bool:
    """Forget a mobile push token the provider says is no longer registered."""
    contact = await _contact(s, contact_id)
    if contact is None or token not in contact.push_tokens:
        return False
    contact.push_tokens = [t for t in contact.push_tokens if t != token]
    _touch(contact, now)
    return True


async def drop_web_push(
    s: AsyncSession, contact_id: str, endpoint: str, now: datetime | None = None,
) -> bool:
    """Forget a web push subscription the push service says is gone (404/410)."""
    contact = await _contact(s, contact_id)
    if contact is None:
        return False
    kept = [sub for sub in contact.web_push
            if not (isinstance(sub, dict) and sub.get("endpoint") == endpoint)]
    if len(kept) == len(contact.web_push):
        return False
    contact.web_push = kept
    _touch(contact, now)
    return True


async def unsubscribe(
    s: AsyncSession, contact_id: str, channel: str, topic: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Withdraw marketing consent on `channel`, or only the `topic` when one is named."""
    contact = await _contact(s, contact_id)
    if contact is None:
        return False
    consent: dict[str, Any] = dict(contact.consent)
    if topic is not None:
        topics = dict(consent.get("topics") or {})
        if topics.get(topic) is False:
            return False
        topics[topic] = False
        consent["topics"] = topics
    else:
        own = consent.get(channel)
        current = dict(own) if isinstance(own, dict) else {}
        if current.get("marketing") is False:
            return False
        current["marketing"] = False
        consent[channel] = current
    contact.consent = consent
    _touch(contact, now)
    return True


async def resubscribe(
    s: AsyncSession, contact_id: str, channel: str, now: datetime | None = None,
    *, grant_marketing: bool = False,
) -> bool:
    """Lift the suppression of `channel` (an SMS START after STOP). False if nothing changed.

    Consent is left as it was unless `grant_marketing`: STOP only suppressed the channel, so
    lifting it restores exactly what the contact had agreed to before. Twilio's opt-in keywords
    include YES, which contacts send to confirm an appointment; that must not turn into consent
    to marketing. Only a contact's own resubscribe (a provider's recipient-initiated
    reactivation) grants it, undoing the `unsubscribe` that withdrew it.
    """
    contact = await _contact(s, contact_id)
    if contact is None:
        return False
    changed = False
    if channel in contact.suppressed:
        contact.suppressed = [c for c in contact.suppressed if c != channel]
        changed = True
    if grant_marketing:
        consent = dict(contact.consent)
        own = consent.get(channel)
        current = dict(own) if isinstance(own, dict) else {}
        if current.get("marketing") is not True:
            current["marketing"] = True
            consent[channel] = current
            contact.consent = consent
            changed = True
    if changed:
        _touch(contact, now)
    return changed


def normalised_address(channel: str, address: str | None) -> str | None:
    """The form an address is hashed in: an email trimmed and lower-cased, a phone in E.164."""
    if not address or not address.strip():
        return None
    if ADDRESS_OF.get(channel) == "phone":
        return normalised_phone(address) or address.strip()
    return address.strip().lower()


def address_hash(key: bytes, channel: str, address: str) -> str:
    """The keyed hash an erased suppression keeps instead of its address."""
    return hmac.new(key, f"{ADDRESS_OF[channel]}:{address}".encode(), hashlib.sha256).hexdigest()


def _hashes(key: bytes, contact: Contact, channels: list[str]) -> list[tuple[str, str]]:
    found = []
    for channel in channels:
        column = ADDRESS_OF.get(channel)
        address = normalised_address(channel, getattr(contact, column)) if column else None
        if address is not None:
            found.append((channel, address_hash(key, channel, address)))
    return found


def _key(s: AsyncSession) -> bytes | None:
    key = s.info.get(ADDRESS_KEY)
    return key if isinstance(key, bytes) else None


async def keep_erased(s: AsyncSession, contact: Contact, now: datetime) -> int:
    """Before `contact` is erased: keep its suppressed channels by address hash (see the module).
    Returns how many were kept; none without the store's address key."""
    key = _key(s)
    if key is None:
        return 0
    kept = 0
    for channel, hashed in _hashes(key, contact, list(contact.suppressed or [])):
        row = ErasedSuppression(channel=channel, address_hash=hashed, created_at=now)
        _, new = await insert_once(s, row, functools.partial(_erased, s, channel, hashed))
        kept += int(new)
    return kept


async def _erased(s: AsyncSession, channel: str, hashed: str) -> ErasedSuppression | None:
    return await s.scalar(select(ErasedSuppression).where(
        ErasedSuppression.channel == channel, ErasedSuppression.address_hash == hashed))


async def recall_erased(s: AsyncSession, contact: Contact, columns: set[str]) -> list[str]:
    """Suppress again the channels of `contact` whose address (in `columns` just given) an
    erased contact had suppressed; returns those channels."""
    key = _key(s)
    if key is None or not columns:
        return []
    channels = [c for c, column in ADDRESS_OF.items()
                if column in columns and c not in (contact.suppressed or [])]
    hashes = _hashes(key, contact, channels)
    if not hashes:
        return []
    rows = await s.execute(select(ErasedSuppression.channel).where(
        ErasedSuppression.address_hash.in_([h for _, h in hashes])))
    found = {channel for (channel,) in rows}
    again = [channel for channel, _ in hashes if channel in found]
    if again:
        contact.suppressed = [*(contact.suppressed or []), *again]
    return again
