"""Contact identifiers normalised the way Facebook and Google match them, then SHA-256 hashed.

Ad platforms match a member by hashing their own copy of an identifier and comparing hashes, so a
hash only matches when both sides normalised the text identically: one stray capital, space or
`+` and the member silently never matches. The rules here follow Meta's customer file hashing
guide and Google's Customer Match formatting guide:

- email: trimmed and lower-cased; Google also drops the dots and any `+suffix` of the local part
  of gmail.com and googlemail.com addresses (Gmail ignores both, so Google matches the bare
  mailbox); any other domain keeps them, because elsewhere they name different mailboxes;
- phone: E.164 (country code required: without one the number cannot be matched anywhere, and
  guessing the country would hash someone else's number). Facebook wants the digits without
  `+`, Google the `+` form;
- first and last name: lower-cased, trimmed, punctuation removed, inner spaces collapsed;
  accented letters stay (both platforms hash the UTF-8 text);
- country: the lower-case ISO 3166-1 alpha-2 code;
- zip: lower-cased without spaces; a US zip is its first five digits (ZIP+4 never matches).

A member with nothing a platform can match on is dropped and counted, never sent: an empty row
costs quota and only lowers the reported match rate.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from cairn.channels.base import AudienceMember, ProviderError
from cairn.reachability import valid_email

Platform = Literal["facebook", "google"]
T = TypeVar("T")
ACTIONS = ("add", "remove")

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
"""Domains whose mailboxes ignore dots and `+suffix`, so Google matches them without."""

_PHONE_PUNCTUATION = re.compile(r"[\s\-.()/]")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_US_ZIP = re.compile(r"^(\d{5})(?:-?\d{4})?$")


def sha256_hex(text: str) -> str:
    """The lower-case hex SHA-256 of the UTF-8 text: the form both platforms take."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise_email(value: str | None, platform: Platform) -> str | None:
    """Trimmed, lower-cased, and for Google the bare Gmail mailbox; None when not an address."""
    if not value:
        return None
    text = value.strip().lower()
    if not valid_email(text):
        return None
    if platform == "google":
        local, _, domain = text.rpartition("@")
        if domain in GMAIL_DOMAINS:
            local = local.split("+", 1)[0].replace(".", "")
            if not local:
                return None
            text = f"{local}@{domain}"
    return text


def normalise_phone(value: str | None, platform: Platform) -> str | None:
    """E.164 with the country code: `+` kept for Google, dropped for Facebook.

    `00` (the international call prefix) counts as `+`, and a national trunk zero written as
    `(0)` after the country code (`+44 (0)20 ...`) is removed, since dialling it abroad fails.
    """
    if not value:
        return None
    compact = _PHONE_PUNCTUATION.sub("", value.strip().replace("(0)", ""))
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not _E164.match(compact):
        return None
    return compact if platform == "google" else compact[1:]


def normalise_name(value: str | None) -> str | None:
    """Lower case, no punctuation or symbols, single inner spaces: `" O'Brien "` is `obrien`."""
    if not value:
        return None
    text = unicodedata.normalize("NFC", value).lower()
    kept = "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "S")))
    collapsed = " ".join(kept.split())
    return collapsed or None


def normalise_country(value: str | None) -> str | None:
    """The two-letter ISO code in lower case (`"U.S."` is `us`); None for anything longer."""
    if not value:
        return None
    letters = re.sub(r"[^a-z]", "", value.strip().lower())
    return letters if len(letters) == 2 else None


def normalise_zip(value: str | None, country: str | None) -> str | None:
    """Lower case without spaces; a US zip (or a zip+4 without a country) keeps five digits."""
    if not value:
        return None
    text = re.sub(r"\s", "", value).lower()
    if country in (None, "us"):
        us = _US_ZIP.match(text)
        if us:
            return us.group(1)
        if country == "us":
            return None
    return text or None


def normalise(member: AudienceMember, platform: Platform) -> AudienceMember:
    """The member with every identifier normalised for the platform (None where unusable)."""
    country = normalise_country(member.country)
    return AudienceMember(
        contact_id=member.contact_id,
        email=normalise_email(member.email, platform),
        phone=normalise_phone(member.phone, platform),
        first_name=normalise_name(member.first_name),
        last_name=normalise_name(member.last_name),
        country=country,
        zip=normalise_zip(member.zip, country),
    )


def usable(member: AudienceMember, platform: Platform) -> bool:
    """Whether the platform can match the member at all.

    Email or phone always match. Facebook also matches a full name (with country and zip
    improving the match); Google matches an address only with first and last name, country and
    zip together. A country or zip alone matches nobody.
    """
    if member.email or member.phone:
        return True
    if platform == "facebook":
        return bool(member.first_name and member.last_name)
    return member.has_full_address


@dataclass(frozen=True)
class PreparedMembers:
    """The members worth sending, normalised for the platform, and how many were dropped for
    having nothing usable."""

    members: list[AudienceMember]
    dropped: int


def prepare(members: Iterable[AudienceMember], platform: Platform) -> PreparedMembers:
    kept: list[AudienceMember] = []
    dropped = 0
    for member in members:
        normalised = normalise(member, platform)
        if usable(normalised, platform):
            kept.append(normalised)
        else:
            dropped += 1
    return PreparedMembers(kept, dropped)


def stable_int64(*parts: str) -> int:
    """A positive 63-bit integer derived from the parts: the same on every retry, so an upload
    session (Facebook) survives the activity being attempted again."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF or 1


def batches(items: list[T], size: int) -> list[list[T]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def require_action(provider: str, action: str) -> str:
    if action not in ACTIONS:
        raise ProviderError(
            provider, f"unknown audience action {action!r}: an audience step either adds or "
            "removes (action: add | remove)", retryable=False, code="action",
        )
    return action


def configured_audience(
    provider: str, audiences: dict[str, str], name: str, setting: str,
) -> str:
    """The platform's id for a Cairn audience name, or a permanent error naming the setting:
    retrying cannot help until someone maps the name."""
    platform_id = audiences.get(name)
    if not platform_id:
        known = ", ".join(sorted(audiences)) or "none"
        raise ProviderError(
            provider, f"audience {name!r} is not configured: add it to {setting} (a JSON object "
            f"mapping Cairn audience names to {provider} audience ids; configured: {known})",
            retryable=False, code="unknown_audience",
        )
    return platform_id
