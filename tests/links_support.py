"""Reading a sent message as its template wrote it: tracked links put back to their targets.

Sends rewrite links to signed redirects (`cairn.links`); tests that check a message's content
(the invoice's payment link, a product URL) read the targets from `delivery_links`. Providers
that record messages call `untracked(store, message)` from their `send`, which runs after the
claim (and its links) committed, unless the provider is `records_only`: recording providers
therefore are not.
"""

from __future__ import annotations

import dataclasses
import re

from cairn.channels.base import OutgoingMessage
from cairn.links import CLICK_PATH, links_of
from cairn.store.db import Store

_TRACKED = re.compile(r"https?://[^\s\"'<>]+" + re.escape(CLICK_PATH) + r"([A-Za-z0-9._-]+)")


async def untracked(store: Store, message: OutgoingMessage) -> OutgoingMessage:
    """The message with every tracked link replaced by the address it redirects to."""
    delivery_id = int(message.metadata.get("delivery_id") or 0)
    targets = {link.position: link.url for link in await links_of(store, [delivery_id])}
    if not targets:
        return message

    def target(match: re.Match[str]) -> str:
        token = match.group(1)
        _, position = (int(n, 36) for n in token.split(".")[:2])
        return targets.get(position, match.group(0))

    parts = {name: _TRACKED.sub(target, text) for name, text in message.parts.items()}
    return dataclasses.replace(message, parts=parts)

