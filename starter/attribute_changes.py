"""Attribute changes: an `identify` that changes a trait stores an `attribute_changed` event.

Ingest asks for the values before merging the traits (`values_before`) and hands them back after
(`record_changes`), in the same transaction as the merge: the old value exists only at that moment,
and keeping the change events in the same commit as the change means a crash right after cannot
lose them (they wait unrouted, like any accepted event, for the relay).

One event per changed trait, for the same contact: `attribute_changed` with
`{attribute, from, to}`. A trait set for the first time counts as a change from `null`
(`from: null`), as Braze and Customer.io users expect: "when plan becomes pro" must fire for a
contact whose very first identify says `plan: pro`. A trait sent again with the same value
changes nothing and stores nothing. Channel traits (email, phone, timezone, consent, push
tokens) are compared as stored after merging, so `consent: {sms: true}` sent twice is one change.
Traits whose name starts with `_` are Cairn's own bookkeeping and never announced.

Derived message ids are `<identify message id>/attribute_changed/<trait>`, so a repeated
identify (same messageId) stores nothing new. Changes made by journeys' `update` steps and by
`PATCH /v1/contacts` are not announced here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cairn.log import get_logger
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store.schema import Contact

log = get_logger(__name__)

ATTRIBUTE_CHANGED = "attribute_changed"

ATTRIBUTE_EVENT_TYPE = "attribute"
"""The `type` of the events this module stores (beside track, identify, audience)."""


def trait_value(contact: Contact | None, name: str) -> Any:
    """A trait's value now: its column for channel traits, else the attribute (None if unset)."""
    if contact is None:
        return None
    if name in contacts_repo.CHANNEL_TRAITS:
        return copy.deepcopy(getattr(contact, name))
    return copy.deepcopy((contact.attributes or {}).get(name))


def announced(names: Iterable[str]) -> list[str]:
    """The trait names whose changes are announced (Cairn's `_` bookkeeping is not)."""
    return [name for name in names if not name.startswith("_")]


async def values_before(s: AsyncSession, contact_id: str, names: Iterable[str]) -> dict[str, Any]:
    """The contact's values of the named traits, copied before an identify changes them."""
    contact = await contacts_repo.get_contact(s, contact_id)
    return {name: trait_value(contact, name) for name in announced(names)}


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
            s, message_id=f"{source_message_id}/{ATTRIBUTE_CHANGED}/{name}",
            type=ATTRIBUTE_EVENT_TYPE, contact_id=contact.id, name=ATTRIBUTE_CHANGED,
            properties=properties, timestamp=timestamp, received_at=received_at,
        )
        if fresh:
            stored.append(row.id)
            log.info("attribute.changed", contact=contact.id, message_id=source_message_id,
                     attribute=name, old=properties["from"], new=new)
    return stored


__all__ = ["ATTRIBUTE_CHANGED", "record_changes", "trait_value", "values_before"]
