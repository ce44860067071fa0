"""Attribute changes: a profile change that changes a trait stores an `attribute_changed` event.

Three writers change traits: `identify` calls, journeys' `update` steps and `PATCH
/v1/contacts/{id}`. Each asks for the values before its change (`values_before`, which takes the
contact's write lock so no other writer slips in between) and hands them back after
(`record_changes`), in the same transaction as the change: the old value exists only at that
moment, and keeping the change events in the same commit as the change means a crash right after
cannot lose them (they wait unrouted, like any accepted event, for the relay). `update_profile`
is that sequence for the path-based changes of `update` steps and PATCH.

One event per changed trait, for the same contact: `attribute_changed` with
`{attribute, from, to}`. A trait set for the first time counts as a change from `null`
(`from: null`), as Braze and Customer.io users expect: "when plan becomes pro" must fire for a
contact whose very first identify says `plan: pro`. A trait sent again with the same value
changes nothing and stores nothing. Channel traits (email, phone, timezone, consent, push
tokens) are compared as stored after merging, so `consent: {sms: true}` sent twice is one change.
Traits whose name starts with `_` are Cairn's own bookkeeping and never announced; nor are tags
and suppressed channels (delivery state changed by `update` and PATCH, not traits).

Derived message ids are `<source>/attribute_changed/<trait>`, where the source is the identify's
messageId, `update/<step idempotency key>` for an `update` step or `patch/<uuid>` for a PATCH: a
repeated identify (same messageId) or a retried `update` activity stores nothing new. An id longer
than the store keeps (255) is replaced by a hash of it, still deterministic.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cairn.log import get_logger
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store.schema import Contact
from cairn.traits import CHANNEL_TRAITS, profile_traits

log = get_logger(__name__)

ATTRIBUTE_CHANGED = "attribute_changed"

ATTRIBUTE_EVENT_TYPE = "attribute"
"""The `type` of the events this module stores (beside track, identify, audience)."""

MESSAGE_ID_LIMIT = 255
"""The longest message id the events table keeps (PostgreSQL refuses longer ones)."""


def trait_value(contact: Contact | None, name: str) -> Any:
    """A trait's value now: its column for channel traits, else the attribute (None if unset)."""
    if contact is None:
        return None
    if name in CHANNEL_TRAITS:
        return copy.deepcopy(getattr(contact, name))
    return copy.deepcopy((contact.attributes or {}).get(name))


def announced(names: Iterable[str]) -> list[str]:
    """The trait names whose changes are announced (Cairn's `_` bookkeeping is not)."""
    return [name for name in names if not name.startswith("_")]


async def values_before(s: AsyncSession, contact_id: str, names: Iterable[str]) -> dict[str, Any]:
    """The contact's values of the named traits, copied under its write lock before a change."""
    wanted = announced(names)
    if not wanted:
        return {}
    contact = await contacts_repo.locked_contact(s, contact_id)
    return {name: trait_value(contact, name) for name in wanted}


def change_message_id(source_message_id: str, name: str) -> str:
    """`<source>/attribute_changed/<trait>`, or a hash of it when the store could not keep it."""
    message_id = f"{source_message_id}/{ATTRIBUTE_CHANGED}/{name}"
    if len(message_id) <= MESSAGE_ID_LIMIT:
        return message_id
    return f"{ATTRIBUTE_CHANGED}/{hashlib.sha256(message_id.encode()).hexdigest()}"


def _empty(value: Any) -> bool:
    """An empty list or mapping column is the same as never set (a new contact has `[]`, `{}`)."""
    return value is None or value == [] or value == {}


async def record_changes(
    s: AsyncSession,
    *,
    source_message_id: str,
    contact: Contact,
    before: dict[str, Any],
    timestamp: datetime,
    received_at: datetime,
) -> list[int]:
    """Store one `attribute_changed` event per trait whose value differs; returns the new ids."""
    stored: list[int] = []
    for name, old in before.items():
        new = trait_value(contact, name)
        if old == new or (_empty(old) and _empty(new)):
            continue
        properties = {"attribute": name, "from": None if _empty(old) else old, "to": new}
        row, fresh = await events_repo.record_event(
            s, message_id=change_message_id(source_message_id, name),
            type=ATTRIBUTE_EVENT_TYPE, contact_id=contact.id, name=ATTRIBUTE_CHANGED,
            properties=properties, timestamp=timestamp, received_at=received_at,
        )
        if fresh:
            stored.append(row.id)
            # The attribute's name only: its values are the contact's personal data.
            log.info("attribute.changed", contact=contact.id, message_id=source_message_id,
                     attribute=name)
    return stored


async def update_profile(
    s: AsyncSession,
    contact_id: str,
    set_: Mapping[str, Any],
    unset: Iterable[str],
    add_tags: Iterable[str],
    remove_tags: Iterable[str],
    *,
    now: datetime,
    source_message_id: str,
    received_at: datetime,
) -> tuple[Contact, list[int]]:
    """Apply a path-based profile change and store its `attribute_changed` events; returns the
    contact and the ids of the events stored (left unrouted, for the caller or the relay).

    The one path `update` steps and `PATCH /v1/contacts/{id}` share, so both announce exactly
    what an identify with the same values would. The events carry `now` (the change's time: the
    journey's clock for a step) as their timestamp.
    """
    unset = list(unset)
    before = await values_before(s, contact_id, profile_traits([*set_, *unset]))
    contact = await contacts_repo.apply_profile_update(
        s, contact_id, set_, unset, list(add_tags), list(remove_tags), now)
    stored = await record_changes(s, source_message_id=source_message_id, contact=contact,
                                  before=before, timestamp=now, received_at=received_at)
    return contact, stored


__all__ = [
    "ATTRIBUTE_CHANGED",
    "change_message_id",
    "record_changes",
    "trait_value",
    "update_profile",
    "values_before",
]
