"""Providers that need no account: the outbox and the in-product inbox.

The outbox is the default for every channel without a configured provider: the delivery
activity records the rendered message in the ledger and the log, and `cairn outbox` shows it.
The inbox is the real delivery mechanism of in-app and on-site messages: the product's front end
reads `GET /v1/contacts/{id}/inbox`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cairn.channels.base import OutgoingMessage, Receipt
from cairn.store import inbox as inbox_repo
from cairn.store.db import Store

OUTBOX = "outbox"
INBOX = "inbox"


class OutboxProvider:
    """Records instead of sending, on any channel."""

    name = OUTBOX
    idempotent = True  # nothing leaves the machine: a second record is the same record
    records_only = True
    """The ledger row is the whole send: its claim and settlement may commit together."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels

    async def send(self, message: OutgoingMessage) -> Receipt:
        digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:24]
        return Receipt(provider=OUTBOX, provider_message_id=f"outbox-{digest}",
                       response={"provider": OUTBOX, "to": message.to})

    async def aclose(self) -> None:
        return None


class InboxProvider:
    """Places in-app and on-site messages in the contact's inbox, once per delivery key."""

    name = INBOX
    channels: tuple[str, ...] = ("in_app", "on_site")
    idempotent = True

    def __init__(self, store: Store) -> None:
        self.store = store

    async def send(self, message: OutgoingMessage) -> Receipt:
        created = message.extra.get("now") or datetime.now(UTC)
        async with self.store.session() as s, s.begin():
            row, _ = await inbox_repo.put_message(
                s, delivery_key=message.idempotency_key, contact_id=message.contact_id,
                channel=message.channel, parts=dict(message.parts), created_at=created,
                journey_key=message.metadata.get("journey"),
                template=message.metadata.get("template"),
            )
            message_id = row.id
        return Receipt(provider=INBOX, provider_message_id=f"inbox-{message_id}",
                       response={"provider": INBOX, "inbox_message_id": message_id})

    async def aclose(self) -> None:
        return None
