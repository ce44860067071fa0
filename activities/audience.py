"""`audience` steps: add the contact to (or remove it from) a Facebook or Google custom audience.

The sync goes through the platform's audience syncer when the workspace set one up, else the
outbox records it. Ledger rows hold only SHA-256 hashes of the email and phone, normalised the
way the platform matches them (the form ad platforms take), never the identifiers themselves.
"""

from __future__ import annotations

from typing import Any

from cairn.channels.audiences import Platform, normalise_email, normalise_phone, sha256_hex
from cairn.channels.base import AudienceMember, AudienceSyncer
from cairn.channels.registry import ChannelSet
from cairn.contact import ContactSnapshot
from cairn.contracts import ActionRequest
from cairn.journey import AudienceSync


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def hashed_identifiers(contact: ContactSnapshot, sync: str) -> dict[str, str | None]:
    """The contact's email and phone, normalised the way the ad platform matches, then hashed:
    the same normalisation the syncers send, so the ledger shows what the platform received."""
    platform: Platform = "facebook" if sync == "facebook" else "google"
    email = normalise_email(contact.email, platform)
    phone = normalise_phone(contact.phone, platform)
    return {
        "email_sha256": sha256_hex(email) if email else None,
        "phone_sha256": sha256_hex(phone) if phone else None,
    }


def member(contact: ContactSnapshot) -> AudienceMember:
    """The contact's identifiers as given; the syncer normalises and hashes them."""
    attributes = contact.attributes
    return AudienceMember(
        contact_id=contact.id, email=contact.email, phone=contact.phone,
        first_name=_text(attributes.get("first_name")),
        last_name=_text(attributes.get("last_name")),
        country=_text(attributes.get("country")),
        zip=_text(attributes.get("zip")),
    )


def syncer(channels: ChannelSet, spec: AudienceSync) -> AudienceSyncer | None:
    return channels.audiences.get(spec.sync)


def columns(
    request: ActionRequest, spec: AudienceSync, contact: ContactSnapshot, scope: dict[str, Any],
) -> dict[str, Any]:
    identifiers = hashed_identifiers(contact, spec.sync)
    rendered = {"sync": spec.sync, "audience": spec.audience, "action": spec.action,
                **identifiers}
    reason = None if any(identifiers.values()) else "no email or phone to match on"
    return {"channel": spec.sync, "rendered": rendered, "reason": reason}


async def call(
    target: AudienceSyncer, request: ActionRequest, spec: AudienceSync,
    contact: ContactSnapshot, scope: dict[str, Any], columns: dict[str, Any],
) -> tuple[Any, str | None]:
    receipt = await target.sync(spec.audience, spec.action, [member(contact)],
                                request.context.idempotency_key)
    return {"provider": receipt.provider, **receipt.response}, receipt.provider_message_id
