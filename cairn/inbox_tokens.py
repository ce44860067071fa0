"""Inbox tokens: short-lived, signed permission to read one contact's in-app inbox.

A product's front end shows a contact their in-app messages, but must never hold an API key (a
key in a browser or app bundle is public). So the product's backend, which holds a read key, asks
Cairn for a token for the signed-in contact (`POST /v1/contacts/{id}/inbox-token`) and hands it to
the front end, which sends it as `Authorization: Bearer inbox.…` to that contact's inbox routes
only, until it expires. Nothing is stored per token: it carries the contact and the expiry,
signed with HMAC-SHA256 under a key derived from the workspace key (so an unsubscribe token can
never pass for an inbox token, nor the reverse).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PREFIX = "inbox."
_PURPOSE = b"cairn inbox token v1"


class InboxTokenError(ValueError):
    """A token that is malformed, altered, signed with another key, expired, or another's."""


class InboxTokenForAnother(InboxTokenError):
    """A genuine token, but for another contact's inbox."""


@dataclass(frozen=True)
class InboxGrant:
    contact_id: str
    expires_at: datetime


def _key(workspace_key: bytes) -> bytes:
    return hmac.new(workspace_key, _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(contact_id: str, now: datetime, lifetime: timedelta,
          workspace_key: bytes) -> tuple[str, datetime]:
    """A token for `contact_id`'s inbox valid for `lifetime` from `now`, and when it expires."""
    expires = (now + lifetime).astimezone(UTC).replace(microsecond=0)
    payload = json.dumps({"c": contact_id, "e": int(expires.timestamp())},
                         separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(_key(workspace_key), payload, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(payload)}.{_b64(mac)}", expires


def verify(token: str, contact_id: str, now: datetime, workspace_key: bytes) -> InboxGrant:
    """The grant a token carries, if it is genuine, unexpired and for `contact_id`."""
    try:
        if not token.startswith(PREFIX):
            raise ValueError("no prefix")
        body, mac = token[len(PREFIX):].split(".", 1)
        payload, given = _unb64(body), _unb64(mac)
    except (ValueError, TypeError) as error:
        raise InboxTokenError("the inbox token is malformed") from error
    expected = hmac.new(_key(workspace_key), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise InboxTokenError("the inbox token's signature does not match")
    try:
        data = json.loads(payload)
        grant = InboxGrant(str(data["c"]), datetime.fromtimestamp(int(data["e"]), UTC))
    except (ValueError, KeyError, TypeError, OverflowError, OSError) as error:
        raise InboxTokenError("the inbox token's payload is malformed") from error
    if grant.expires_at <= now:
        raise InboxTokenError("the inbox token has expired: ask your backend for a new one")
    if not hmac.compare_digest(grant.contact_id.encode(), contact_id.encode()):
        raise InboxTokenForAnother("the inbox token is for another contact")
    return grant
