"""Signed unsubscribe links: who unsubscribes from what, carried in the link itself.

A link must work years after the message was sent, from any mail client, without a login, and
must not let anyone unsubscribe someone else: so the token holds the contact, the channel and the
topic (none = all marketing on that channel), signed with HMAC-SHA256 under the workspace key.
Nothing is stored per link. RFC 8058 one-click: mail providers POST `List-Unsubscribe=One-Click`
to the same URL, which must act without a confirmation page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import urlencode


class UnsubscribeTokenError(ValueError):
    """A token that was altered, truncated or signed with another key."""


@dataclass(frozen=True)
class UnsubscribeScope:
    contact_id: str
    channel: str
    topic: str | None = None

    def describe(self) -> str:
        what = f"topic {self.topic}" if self.topic else "marketing"
        return f"{what} on {self.channel}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(scope: UnsubscribeScope, key: bytes) -> str:
    payload = json.dumps(
        {"c": scope.contact_id, "ch": scope.channel, "t": scope.topic},
        separators=(",", ":"), sort_keys=True,
    ).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(token: str, key: bytes) -> UnsubscribeScope:
    try:
        body, mac = token.split(".", 1)
        payload = _unb64(body)
        given = _unb64(mac)
    except (ValueError, TypeError) as error:
        raise UnsubscribeTokenError("unsubscribe token is malformed") from error
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise UnsubscribeTokenError("unsubscribe token signature does not match")
    try:
        data = json.loads(payload)
        return UnsubscribeScope(contact_id=str(data["c"]), channel=str(data["ch"]),
                                topic=data.get("t"))
    except (ValueError, KeyError, TypeError) as error:
        raise UnsubscribeTokenError("unsubscribe token payload is malformed") from error


def unsubscribe_url(public_url: str, scope: UnsubscribeScope, key: bytes) -> str:
    return f"{public_url.rstrip('/')}/v1/unsubscribe?{urlencode({'token': sign(scope, key)})}"


def list_unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 2369 + RFC 8058 headers: mail clients show an unsubscribe button that POSTs here."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
