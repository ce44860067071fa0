"""What closes a channel for a contact: suppression (bounce, complaint, STOP), dead push tokens,
and unsubscribes from marketing or from one topic.

Each change is written on the contact row itself, because reachability reads only the contact
snapshot: the next send plan sees it without another query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.schema import Contact


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
