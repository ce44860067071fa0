"""Contacts: who they are, how to reach them, what they agreed to, and their profile.

Channel fields (time zone, email, phone, push tokens, web push subscriptions, consent, suppressed
channels) live in their own columns because reachability reads them on every send; every other
trait goes into `attributes`. Writers lock the contact's row first (`_locked`), so two writers
merging into the same JSON columns at once cannot lose each other's change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.contact import ContactSnapshot
from cairn.local_time import is_timezone
from cairn.store.events import erase_events, reattribute_events
from cairn.store.schema import (
    Contact,
    Delivery,
    Entry,
    Score,
    ScoreChangeRecord,
    SegmentMembership,
    Task,
)
from cairn.store.scores import scores_of
from cairn.store.segments import active_segments, enter_segment, exit_all_segments

CHANNEL_TRAITS = ("timezone", "email", "phone", "push_tokens", "web_push", "consent")
"""Traits stored in their own columns; `identify` merges every other trait into `attributes`."""

PROFILE_COLUMNS = (*CHANNEL_TRAITS, "suppressed")
"""First parts of `update` paths that address a column rather than an attribute."""


class ContactTraitError(ValueError):
    """A trait whose value cannot be stored (e.g. an unknown time zone); names the trait."""


# --------------------------------------------------------------------------- reading


async def get_contact(s: AsyncSession, contact_id: str) -> Contact | None:
    return await s.get(Contact, contact_id)


async def resolve_contact_id(s: AsyncSession, user_id: str | None, anonymous_id: str | None) -> str:
    """The contact a call is about: `userId` if given, else the user an alias linked the
    `anonymousId` to, else the anonymous id itself (a visitor not yet known).

    Without the alias lookup, an event sent after `POST /v1/alias` with only the anonymous id
    (the browser had not yet learned the user id) would recreate the visitor the alias folded
    into the user, and its has_done counts would be split between two contacts again.
    """
    if user_id is not None:
        return user_id
    if anonymous_id is None:
        raise ValueError("a call needs userId or anonymousId")
    aliased = await s.scalar(
        select(Contact.id).where(Contact.anonymous_id == anonymous_id).order_by(Contact.id).limit(1)
    )
    return aliased if aliased is not None else anonymous_id


async def snapshot(s: AsyncSession, contact_id: str) -> ContactSnapshot | None:
    """The contact as journeys see it: profile, channels, scores and active segments."""
    contact = await s.get(Contact, contact_id, populate_existing=True)
    if contact is None:
        return None
    return ContactSnapshot(
        id=contact.id,
        timezone=contact.timezone,
        email=contact.email,
        phone=contact.phone,
        push_tokens=[str(t) for t in contact.push_tokens or [] if t],
        web_push=[
            sub for sub in contact.web_push or []
            if isinstance(sub, dict) and isinstance(sub.get("endpoint"), str)
        ],
        consent=dict(contact.consent or {}),
        suppressed=[str(c) for c in contact.suppressed or []],
        attributes=dict(contact.attributes or {}),
        tags=[str(t) for t in contact.tags or []],
        scores=await scores_of(s, contact_id),
        segments=await active_segments(s, contact_id),
        first_seen_at=contact.first_seen_at,
        last_seen_at=contact.last_seen_at,
    )


# --------------------------------------------------------------------------- writing


async def _locked(s: AsyncSession, contact_id: str) -> Contact | None:
    """The contact's row, read fresh after taking its write lock (None if there is none).

    A no-op UPDATE is the portable lock: PostgreSQL locks the row, SQLite takes the database's
    write lock, and either way the read that follows cannot be overtaken by another writer.

    When the UPDATE matched no row, None is returned even if a row is there by now: on PostgreSQL
    a row inserted by a transaction that committed after the UPDATE began is invisible to it, so
    it is not locked, and reading it would lose that writer's change. The caller then inserts,
    meets the unique key, and locks again, this time for real.
    """
    locked = await s.execute(
        update(Contact)
        .where(Contact.id == contact_id)
        .values(updated_at=Contact.updated_at)
        .execution_options(synchronize_session=False)
    )
    if getattr(locked, "rowcount", 1) == 0:
        return None
    return await s.get(Contact, contact_id, populate_existing=True)


async def _create(s: AsyncSession, contact_id: str, now: datetime, *, seen: bool) -> Contact:
    contact = Contact(
        id=contact_id,
        push_tokens=[],
        web_push=[],
        consent={},
        suppressed=[],
        attributes={},
        tags=[],
        first_seen_at=now if seen else None,
        last_seen_at=now if seen else None,
        created_at=now,
        updated_at=now,
    )
    try:
        async with s.begin_nested():
            s.add(contact)
            await s.flush()
    except IntegrityError:
        # Created by a concurrent writer between our lock and our insert (PostgreSQL): this
        # call's sighting still counts, so widen the seen span of the row that won.
        existing = await _locked(s, contact_id)
        if existing is None:
            raise
        if seen:
            _seen(existing, now)
        return existing
    return contact


async def locked_contact(s: AsyncSession, contact_id: str) -> Contact | None:
    """The contact's row under its write lock, read fresh (None if there is none).

    For callers that must read the values they are about to change (to announce the change):
    reading before the lock could miss another writer's commit and announce a wrong `from`.
    """
    return await _locked(s, contact_id)


async def _writable(s: AsyncSession, contact_id: str, now: datetime, *, seen: bool) -> Contact:
    contact = await _locked(s, contact_id)
    if contact is None:
        return await _create(s, contact_id, now, seen=seen)
    if seen:
        _seen(contact, now)
    return contact


def _seen(contact: Contact, now: datetime) -> None:
    """Widen the first/last seen span to `now` (events may arrive out of order)."""
    if contact.first_seen_at is None or now < contact.first_seen_at:
        contact.first_seen_at = now
    if contact.last_seen_at is None or now > contact.last_seen_at:
        contact.last_seen_at = now


async def ensure_contact(s: AsyncSession, contact_id: str, now: datetime) -> Contact:
    """The contact, created if unknown, marked as seen at `now`."""
    contact = await _writable(s, contact_id, now, seen=True)
    await s.flush()
    return contact


async def identify(
    s: AsyncSession, contact_id: str, traits: Mapping[str, Any], now: datetime
) -> Contact:
    """Merge identify traits into the contact (created if unknown) and mark it seen.

    `push_tokens` and `web_push` add to what the contact has (a new device does not remove the
    old one); `consent` merges per key; a null channel trait clears it; other traits replace the
    attribute of the same name.
    """
    contact = await _writable(s, contact_id, now, seen=True)
    attributes = dict(contact.attributes or {})
    for name, value in traits.items():
        if name == "timezone":
            contact.timezone = _timezone(value)
        elif name in ("email", "phone"):
            setattr(contact, name, _text(name, value))
        elif name == "push_tokens":
            contact.push_tokens = _union(contact.push_tokens or [], _tokens(value))
        elif name == "web_push":
            contact.web_push = _merge_subscriptions(contact.web_push or [], value)
        elif name == "consent":
            contact.consent = _merge_consent(contact.consent or {}, value)
        else:
            attributes[name] = copy.deepcopy(value)
    contact.attributes = attributes
    contact.updated_at = now
    await s.flush()
    return contact


async def apply_profile_update(
    s: AsyncSession,
    contact_id: str,
    set: Mapping[str, Any],
    unset: Iterable[str],
    add_tags: Iterable[str],
    remove_tags: Iterable[str],
    now: datetime,
) -> Contact:
    """An `update` step: set and unset dotted paths, add and remove tags.

    A path whose first part is a channel column (`consent.marketing`, `email`, `suppressed`)
    changes that column; any other path is inside `attributes` (`cart.items`). Setting the same
    values twice leaves the same profile, so a retried activity is harmless.
    """
    contact = await _writable(s, contact_id, now, seen=False)
    profile: dict[str, Any] = {
        "attributes": copy.deepcopy(contact.attributes or {}),
        **{name: copy.deepcopy(getattr(contact, name)) for name in PROFILE_COLUMNS},
    }
    for path, value in set.items():
        _set_path(profile, _profile_path(path), copy.deepcopy(value))
    for path in unset:
        _unset_path(profile, _profile_path(path))
    tags = [t for t in contact.tags or [] if t not in remove_tags]
    contact.tags = _union(tags, [t for t in add_tags if t not in remove_tags])
    contact.attributes = profile["attributes"]
    contact.timezone = _timezone(profile["timezone"])
    contact.email = _text("email", profile["email"])
    contact.phone = _text("phone", profile["phone"])
    contact.push_tokens = _tokens(profile["push_tokens"])
    contact.web_push = _merge_subscriptions([], profile["web_push"])
    contact.consent = profile["consent"] if isinstance(profile["consent"], dict) else {}
    contact.suppressed = _tokens(profile["suppressed"])
    contact.updated_at = now
    await s.flush()
    return contact


async def create_contact(s: AsyncSession, contact: ContactSnapshot, now: datetime) -> Contact:
    """Write a whole contact as given (simulations, imports): profile, scores and segments.

    An existing contact with the same id is overwritten, its scores set to the given totals and
    its segments made exactly the given ones.
    """
    row = await _writable(s, contact.id, now, seen=False)
    row.timezone = _timezone(contact.timezone)
    row.email = _text("email", contact.email)
    row.phone = _text("phone", contact.phone)
    row.push_tokens = list(contact.push_tokens)
    row.web_push = [sub.model_dump(mode="json") for sub in contact.web_push]
    row.consent = copy.deepcopy(contact.consent)
    row.suppressed = list(contact.suppressed)
    row.attributes = copy.deepcopy(contact.attributes)
    row.tags = list(contact.tags)
    row.first_seen_at = contact.first_seen_at
    row.last_seen_at = contact.last_seen_at
    row.updated_at = now
    await s.flush()
    for dimension, total in contact.scores.items():
        score = await s.get(Score, (contact.id, dimension))
        if score is None:
            s.add(Score(contact_id=contact.id, dimension=dimension, total=total, updated_at=now))
        else:
            score.total, score.updated_at = total, now
    await exit_all_segments(s, contact.id, now, keep=contact.segments)
    for segment in contact.segments:
        await enter_segment(s, contact.id, segment, now)
    await s.flush()
    return row


# --------------------------------------------------------------------------- traits


def _timezone(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not is_timezone(value):
        raise ContactTraitError(
            f"timezone: {value!r} is not a known time zone; use an IANA name such as "
            "'Europe/Bucharest'"
        )
    return value


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise ContactTraitError(f"{name}: expected text, got {type(value).__name__}")
    text = str(value).strip()
    # PostgreSQL refuses text longer than the column where SQLite would store it: check here so
    # both stores answer with the same clear error instead of a database failure.
    limit = getattr(Contact.__table__.c[name].type, "length", None)
    if limit is not None and len(text) > limit:
        raise ContactTraitError(f"{name}: {len(text)} characters is longer than the {limit} "
                                "allowed")
    return text or None


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return _union([], [str(v) for v in value if v])
    raise ContactTraitError(f"expected a list of texts, got {type(value).__name__}")


def _union(first: Iterable[Any], more: Iterable[Any]) -> list[Any]:
    merged = list(first)
    for item in more:
        if item not in merged:
            merged.append(item)
    return merged


def _merge_subscriptions(current: list[Any], value: Any) -> list[dict[str, Any]]:
    """Web push subscriptions by endpoint; a later one for the same endpoint replaces it."""
    if value is None:
        return []
    given = [value] if isinstance(value, dict) else value
    if not isinstance(given, list):
        raise ContactTraitError(
            f"web_push: expected a subscription {{endpoint, keys}} or a list of them, got "
            f"{type(value).__name__}"
        )
    by_endpoint: dict[str, dict[str, Any]] = {}
    for sub in [*current, *given]:
        if not isinstance(sub, dict) or not isinstance(sub.get("endpoint"), str):
            raise ContactTraitError(f"web_push: a subscription needs an endpoint, got {sub!r}")
        by_endpoint[sub["endpoint"]] = {"endpoint": sub["endpoint"],
                                        "keys": dict(sub.get("keys") or {})}
    return list(by_endpoint.values())


def _merge_consent(current: dict[str, Any], value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContactTraitError(
            "consent: expected a mapping such as {marketing: true, sms: {marketing: false}}"
        )
    merged = copy.deepcopy(current)
    for key, given in value.items():
        if isinstance(given, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **given}
        else:
            merged[key] = copy.deepcopy(given)
    return merged


# --------------------------------------------------------------------------- dotted paths


def profile_traits(paths: Iterable[str]) -> list[str]:
    """The trait names an update of these dotted paths changes, as `identify` names them.

    `cart.items` and `attributes.cart.items` change the trait `cart`; `consent.sms.marketing`
    changes `consent`; `email` changes `email`. `suppressed` is a delivery state, not a trait,
    and is left out. Names come once each, in the order given.
    """
    names: list[str] = []
    for path in paths:
        parts = _profile_path(path)
        name = parts[1] if parts[0] == "attributes" else parts[0]
        if (parts[0] == "attributes" or name in CHANNEL_TRAITS) and name not in names:
            names.append(name)
    return names


def _profile_path(path: str) -> list[str]:
    parts = [p for p in path.split(".") if p]
    if not parts:
        raise ContactTraitError(f"empty profile path {path!r}")
    if parts[0] in PROFILE_COLUMNS:
        return parts
    if parts[0] == "attributes" and len(parts) > 1:
        return parts
    return ["attributes", *parts]


def _set_path(root: dict[str, Any], parts: list[str], value: Any) -> None:
    *parents, last = parts
    current = root
    for part in parents:
        child = current.get(part)
        if not isinstance(child, dict):
            child = {}
            current[part] = child
        current = child
    current[last] = value


def _unset_path(root: dict[str, Any], parts: list[str]) -> None:
    *parents, last = parts
    current: Any = root
    for part in parents:
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(current, dict):
        if len(parts) == 1:
            current[last] = None  # a column: unset means empty
        else:
            current.pop(last, None)


# --------------------------------------------------------------------------- alias and erasure


class AliasError(ValueError):
    """An alias that cannot be applied (e.g. an id aliased to itself); the message says why."""


@dataclass(frozen=True)
class AliasResult:
    """What an alias moved from the anonymous id to the user id."""

    contact: Contact
    events: int
    merged_contact: bool


async def alias_contact(
    s: AsyncSession, anonymous_id: str, user_id: str, now: datetime
) -> AliasResult:
    """Fold an anonymous visitor into the user they turned out to be (Segment `alias`).

    The visitor's events, deliveries, tasks, score changes and scores move to the user, so
    `has_done` and scores count what was done before sign-up. Traits merge with the user's
    values winning: the visitor's only fill gaps, push tokens and web push subscriptions are
    added, consent keys the user has not answered are taken over. The visitor's contact row and
    segment memberships go (segments are evaluated again for the user); the user remembers the
    anonymous id, so later calls carrying only that id are the user's (`resolve_contact_id`).
    Journeys the visitor is running keep their anonymous id. Safe to repeat.
    """
    if anonymous_id == user_id:
        raise AliasError(
            f"previousId and userId are both {user_id!r}: an alias links two different ids"
        )
    visitor = await _locked(s, anonymous_id)
    user = await _writable(s, user_id, now, seen=False)
    events = await reattribute_events(s, anonymous_id, user_id)
    for table in (Delivery, Task, ScoreChangeRecord):
        await s.execute(
            update(table)
            .where(table.contact_id == anonymous_id)
            .values(contact_id=user_id)
            .execution_options(synchronize_session=False)
        )
    # One user per anonymous id: the latest alias wins, so later anonymous events go to it.
    await s.execute(
        update(Contact)
        .where(Contact.anonymous_id == anonymous_id, Contact.id != user_id)
        .values(anonymous_id=None)
        .execution_options(synchronize_session=False)
    )
    if visitor is not None:
        _absorb(user, visitor)
        await _add_scores(s, anonymous_id, user_id, now)
        await s.execute(
            delete(SegmentMembership).where(SegmentMembership.contact_id == anonymous_id)
        )
        await s.delete(visitor)
    user.anonymous_id = anonymous_id
    user.updated_at = now
    await s.flush()
    return AliasResult(contact=user, events=events, merged_contact=visitor is not None)


def _absorb(user: Contact, visitor: Contact) -> None:
    """Merge the visitor's profile into the user's; the user's own values win."""
    for column in ("timezone", "email", "phone"):
        if getattr(user, column) is None:
            setattr(user, column, getattr(visitor, column))
    user.push_tokens = _union(user.push_tokens or [], visitor.push_tokens or [])
    user.web_push = _merge_subscriptions(visitor.web_push or [], user.web_push or [])
    user.consent = _merge_consent(copy.deepcopy(visitor.consent or {}), user.consent or {})
    user.suppressed = _union(user.suppressed or [], visitor.suppressed or [])
    user.attributes = {**copy.deepcopy(visitor.attributes or {}), **(user.attributes or {})}
    user.tags = _union(user.tags or [], visitor.tags or [])
    for seen in (visitor.first_seen_at, visitor.last_seen_at):
        if seen is not None:
            _seen(user, seen)


async def _add_scores(s: AsyncSession, from_id: str, to_id: str, now: datetime) -> None:
    rows = list(await s.scalars(select(Score).where(Score.contact_id == from_id)))
    for row in rows:
        target = await s.get(Score, (to_id, row.dimension))
        if target is None:
            s.add(Score(contact_id=to_id, dimension=row.dimension, total=row.total,
                        updated_at=now))
        else:
            target.total, target.updated_at = target.total + row.total, now
        await s.delete(row)
    await s.flush()


@dataclass(frozen=True)
class Erasure:
    """How many rows of each kind an erasure deleted."""

    contacts: int
    events: int
    deliveries: int
    scores: int
    score_changes: int
    memberships: int
    tasks: int
    entries: int


async def erase_contact(s: AsyncSession, contact_id: str) -> Erasure:
    """Delete everything stored about a contact: profile, events, deliveries, scores and their
    history, segment memberships, tasks and journey entries (right to erasure).

    Ending the contact's running journeys is the caller's job, before this (a journey still
    running could write again); see `starter.api.contacts`.
    """
    columns: dict[str, Any] = {
        "deliveries": Delivery.contact_id, "score_changes": ScoreChangeRecord.contact_id,
        "scores": Score.contact_id, "memberships": SegmentMembership.contact_id,
        "tasks": Task.contact_id, "entries": Entry.contact_id, "contacts": Contact.id,
    }
    counts: dict[str, int] = {}
    for name, column in columns.items():
        result = await s.execute(
            delete(column.class_).where(column == contact_id)
            .execution_options(synchronize_session=False)
        )
        counts[name] = int(getattr(result, "rowcount", 0) or 0)
    counts["events"] = await erase_events(s, contact_id)
    return Erasure(**counts)
