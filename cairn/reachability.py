"""Whether a contact can be reached on a channel for a category of message, and why not.

Reachable = a usable address on the channel + not suppressed there (bounce, complaint,
unsubscribe) + consent for the category. Marketing needs consent (`consent.marketing`, which a
channel may override with `consent.<channel>: bool` or `consent.<channel>.marketing: bool`);
transactional messages are consented unless a channel says `transactional: false`.

Pure functions over a `ContactSnapshot`: the `reachable` condition, the send planner and tests all
decide the same way. Reasons name the channel and the cause, because they show in journey paths;
they never repeat the address itself.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from cairn.conditions import Verdict
from cairn.contact import ContactSnapshot
from cairn.journey import CHANNELS

Cause = Literal["channel", "address", "suppressed", "consent"]

_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s\-.()/]")

ADDRESSLESS_CHANNELS = ("in_app", "on_site")
"""Channels shown inside the product: every known contact has an inbox there."""


@dataclass(frozen=True)
class Blocker:
    """Why a channel cannot be used: the kind of cause and the reason a person reads."""

    cause: Cause
    reason: str


def valid_email(address: str | None) -> bool:
    """A syntactically usable address (`local@domain.tld`, at most 254 characters)."""
    text = (address or "").strip()
    return 0 < len(text) <= 254 and bool(_EMAIL.match(text))


def normalised_phone(phone: str | None) -> str | None:
    """The E.164 form (`+` and 8-15 digits) of a phone number, spaces and dashes removed."""
    if not phone:
        return None
    compact = _PHONE_PUNCTUATION.sub("", phone)
    return compact if _E164.match(compact) else None


def _address_problem(contact: ContactSnapshot, channel: str) -> str | None:
    if channel == "email":
        if not contact.email:
            return "no email address"
        return None if valid_email(contact.email) else "email address is not valid"
    if channel in ("sms", "whatsapp"):
        if not contact.phone:
            return "no phone number"
        if normalised_phone(contact.phone) is None:
            return "phone number is not in E.164 form (+ and 8-15 digits)"
        return None
    if channel == "push":
        return None if any(contact.push_tokens) else "no push token"
    if channel == "web_push":
        return None if any(s.endpoint for s in contact.web_push) else "no web push subscription"
    return None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def marketing_consent(consent: dict[str, Any], channel: str) -> bool:
    """Consent to marketing on a channel: the channel's own answer, else the general one."""
    own = consent.get(channel)
    if isinstance(own, dict):
        answer = _flag(own.get("marketing"))
        if answer is not None:
            return answer
    elif _flag(own) is not None:
        return bool(own)
    return consent.get("marketing") is True


def transactional_consent(consent: dict[str, Any], channel: str) -> bool:
    """Transactional messages are implied consented unless the channel refuses them."""
    own = consent.get(channel)
    return not (isinstance(own, dict) and own.get("transactional") is False)


def topic_consent(consent: dict[str, Any], topic: str) -> bool:
    """Subscribed to a topic unless the contact unsubscribed from it (`topics.<topic>: false`)."""
    topics = consent.get("topics")
    return not (isinstance(topics, dict) and topics.get(topic) is False)


def blocker(
    contact: ContactSnapshot, channel: str, category: str, *, topic: str | None = None,
    disabled: Collection[str] = (),
) -> Blocker | None:
    """What keeps a message of `category` from `channel`, or None when the contact is reachable.

    `disabled` are channels the workspace turned off (no provider configured for them).
    """
    if channel not in CHANNELS:
        return Blocker("channel", f"{channel}: unknown channel (known: {', '.join(CHANNELS)})")
    if channel in disabled:
        return Blocker("channel", f"{channel}: channel disabled in this workspace")
    problem = _address_problem(contact, channel)
    if problem is not None:
        return Blocker("address", f"{channel}: {problem}")
    if channel in contact.suppressed:
        return Blocker("suppressed", f"{channel}: suppressed (bounce, complaint or unsubscribe)")
    if category == "marketing":
        if not marketing_consent(contact.consent, channel):
            return Blocker("consent", f"{channel}: no marketing consent")
    elif category == "transactional":
        if not transactional_consent(contact.consent, channel):
            return Blocker("consent", f"{channel}: transactional messages refused")
    else:
        return Blocker("channel", f"{channel}: unknown category {category!r} "
                                  "(transactional or marketing)")
    if topic is not None and not topic_consent(contact.consent, topic):
        return Blocker("consent", f"{channel}: unsubscribed from topic {topic}")
    return None


def reachability(
    contact: ContactSnapshot, channel: str, category: str, *, disabled: Collection[str] = (),
) -> Verdict:
    """Whether `contact` can get a `category` message on `channel`, with the reason."""
    found = blocker(contact, channel, category, disabled=disabled)
    if found is not None:
        return Verdict(False, found.reason)
    return Verdict(True, f"{channel}: reachable for {category}")
