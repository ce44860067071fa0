"""Contacts: who they are, how to reach them, what they agreed to, and their profile.

Channel fields (time zone, email, phone, push tokens, web push subscriptions, consent, suppressed
channels) live in their own columns because reachability reads them on every send; every other
trait goes into `attributes`. Writers lock the contact's row first (`locked_contact`), so two
writers merging into the same JSON columns at once cannot lose each other's change.

How a given value merges into a trait is `cairn.traits`; folding an anonymous visitor into a user
and erasing a contact is `cairn.store.identity`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, literal_column, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from cairn.contact import ContactSnapshot
from cairn.store import suppressions
from cairn.store.schema import Contact, Score, SegmentMembership
from cairn.store.segments import enter_segment, exit_all_segments
from cairn.traits import (
    PROFILE_COLUMNS,
    merge_consent,
    merge_subscriptions,
    profile_path,
    set_path,
    text_trait,
    timezone_trait,
    token_list,
    union,
    unset_path,
)

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


async def resolve_contact_ids(
    s: AsyncSession, calls: Iterable[tuple[str | None, str | None]]
) -> list[str]:
    """`resolve_contact_id` for many (userId, anonymousId) pairs, with one query for all the
    anonymous ids (chunked far below the databases' parameter limits)."""
    pairs = list(calls)
    for user_id, anonymous_id in pairs:
        if user_id is None and anonymous_id is None:
            raise ValueError("a call needs userId or anonymousId")
    anonymous = list(dict.fromkeys(a for u, a in pairs if u is None and a is not None))
    aliased: dict[str, str] = {}
    for start in range(0, len(anonymous), 1000):
        rows = await s.execute(
            select(Contact.anonymous_id, func.min(Contact.id))
            .where(Contact.anonymous_id.in_(anonymous[start:start + 1000]))
            .group_by(Contact.anonymous_id)
        )
        aliased.update({str(a): str(c) for a, c in rows})
    return [u if u is not None else aliased.get(str(a), str(a)) for u, a in pairs]


async def snapshot(s: AsyncSession, contact_id: str, *,
                   scores: bool = True) -> ContactSnapshot | None:
    """The contact as journeys see it: profile, channels, scores and active segments.

    `scores=False` leaves scores and segments out (empty), one statement less, for a reader
    that has shown it does not look at them (`cairn.contact.reads_scores`)."""
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
        **(await _scores_and_segments(s, contact_id) if scores else {}),
        first_seen_at=contact.first_seen_at,
        last_seen_at=contact.last_seen_at,
    )


async def _scores_and_segments(s: AsyncSession, contact_id: str) -> dict[str, Any]:
    """The contact's scores (`scores_of`) and active segments (`active_segments`), read with
    one statement (a snapshot is read by every step that acts on the contact)."""
    query = union_all(
        select(literal("score").label("kind"), Score.dimension.label("name"),
               Score.total.label("total")).where(Score.contact_id == contact_id),
        select(literal("segment").label("kind"), SegmentMembership.segment.label("name"),
               literal(0).label("total"))
        .where(SegmentMembership.contact_id == contact_id,
               SegmentMembership.exited_at.is_(None)),
    )
    scores: dict[str, int] = {}
    segments: set[str] = set()
    for kind, name, total in await s.execute(query):
        if kind == "score":
            scores[name] = int(total)
        else:
            segments.add(name)
    return {"scores": scores, "segments": sorted(segments)}


# --------------------------------------------------------------------------- writing


async def locked_contact(s: AsyncSession, contact_id: str) -> Contact | None:
    """The contact's row, read fresh after taking its write lock (None if there is none).

    For every writer, and for callers that must read the values they are about to change (to
    announce the change): reading before the lock could miss another writer's commit and announce
    a wrong `from`.

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
        existing = await locked_contact(s, contact_id)
        if existing is None:
            raise
        if seen:
            mark_seen(existing, now)
        return existing
    return contact


async def writable_contact(
    s: AsyncSession, contact_id: str, now: datetime, *, seen: bool
) -> Contact:
    """The contact's row under its write lock, created if unknown; with `seen`, seen at `now`."""
    contact = await locked_contact(s, contact_id)
    if contact is None:
        return await _create(s, contact_id, now, seen=seen)
    if seen:
        mark_seen(contact, now)
    return contact


def mark_seen(contact: Contact, now: datetime) -> None:
    """Widen the first/last seen span to `now` (events may arrive out of order)."""
    if contact.first_seen_at is None or now < contact.first_seen_at:
        contact.first_seen_at = now
    if contact.last_seen_at is None or now > contact.last_seen_at:
        contact.last_seen_at = now


async def ensure_contact(s: AsyncSession, contact_id: str, now: datetime) -> Contact:
    """The contact, created if unknown, marked as seen at `now`."""
    contact = await writable_contact(s, contact_id, now, seen=True)
    await s.flush()
    return contact


async def see_contacts(
    s: AsyncSession, sightings: Mapping[str, tuple[datetime, datetime, datetime]]
) -> None:
    """`ensure_contact` for many contacts at once: per contact id, (the time of its first
    sighting, the earliest, the latest). An unknown contact is created as `ensure_contact` would
    have created it at its first sighting, then widened; a known one has its seen span widened.

    One upsert (`INSERT ... ON CONFLICT (id) DO UPDATE`, an executemany) in id order: it takes
    the write lock on SQLite and locks the rows on PostgreSQL, in id order, so concurrent writers
    serialize as with `locked_contact` and two batches cannot deadlock on each other's contacts;
    a contact a concurrent writer creates meanwhile is widened like any known one.
    """
    if not sightings:
        return
    rows = []
    for contact_id in sorted(sightings):
        at_first, earliest, latest = sightings[contact_id]
        rows.append({"id": contact_id, "first_seen_at": earliest, "last_seen_at": latest,
                     "created_at": at_first, "updated_at": at_first})
    await s.execute(_seen_upsert(s.bind.dialect.name), rows)
    # Contacts this session holds (an identify earlier in the batch) see the new span; they were
    # read under the lock this transaction holds, so they are the stored rows.
    for held in list(s.identity_map.values()):
        if isinstance(held, Contact) and held.id in sightings:
            _, earliest, latest = sightings[held.id]
            if held.first_seen_at is None or earliest < held.first_seen_at:
                set_committed_value(held, "first_seen_at", earliest)
            if held.last_seen_at is None or latest > held.last_seen_at:
                set_committed_value(held, "last_seen_at", latest)


_SEEN_UPSERTS: dict[str, Any] = {}


def _seen_upsert(dialect_name: str) -> Any:
    """`see_contacts`' statement (built once per dialect): a new contact's empty JSON columns
    are written as SQL constants, so each row binds only its id and times."""
    statement = _SEEN_UPSERTS.get(dialect_name)
    if statement is not None:
        return statement
    table = Contact.__table__
    postgres = dialect_name == "postgresql"
    insert = (postgresql if postgres else sqlite).insert(table).values(
        **{name: literal_column(f"'{empty}'") for name, empty in (
            ("push_tokens", "[]"), ("web_push", "[]"), ("consent", "{}"), ("suppressed", "[]"),
            ("attributes", "{}"), ("tags", "[]"))})
    stored_first, stored_last = table.c.first_seen_at, table.c.last_seen_at
    seen_first, seen_last = insert.excluded.first_seen_at, insert.excluded.last_seen_at
    if postgres:  # LEAST and GREATEST skip nulls
        first, last = func.least(stored_first, seen_first), func.greatest(stored_last, seen_last)
    else:  # SQLite's min/max of several values are null if any is; its times are ISO text
        first = func.min(func.coalesce(stored_first, seen_first), seen_first)
        last = func.max(func.coalesce(stored_last, seen_last), seen_last)
    statement = insert.on_conflict_do_update(
        index_elements=["id"], set_={"first_seen_at": first, "last_seen_at": last})
    _SEEN_UPSERTS[dialect_name] = statement
    return statement


async def identify(
    s: AsyncSession, contact_id: str, traits: Mapping[str, Any], now: datetime
) -> Contact:
    """Merge identify traits into the contact (created if unknown) and mark it seen.

    `push_tokens` and `web_push` add to what the contact has (a new device does not remove the
    old one); `consent` merges per key; a null channel trait clears it; other traits replace the
    attribute of the same name.
    """
    contact = await writable_contact(s, contact_id, now, seen=True)
    addresses = (contact.email, contact.phone)
    attributes = dict(contact.attributes or {})
    for name, value in traits.items():
        if name == "timezone":
            contact.timezone = timezone_trait(value)
        elif name in ("email", "phone"):
            setattr(contact, name, _text(name, value))
        elif name == "push_tokens":
            contact.push_tokens = union(contact.push_tokens or [], token_list(value))
        elif name == "web_push":
            contact.web_push = merge_subscriptions(contact.web_push or [], value)
        elif name == "consent":
            contact.consent = merge_consent(contact.consent or {}, value)
        else:
            attributes[name] = copy.deepcopy(value)
    contact.attributes = attributes
    contact.updated_at = now
    await _recall_suppressions(s, contact, addresses)
    await s.flush()
    return contact


async def _recall_suppressions(
    s: AsyncSession, contact: Contact, before: tuple[str | None, str | None],
) -> None:
    """A new address that an erased contact had suppressed is suppressed again (one query, and
    only when an address changed)."""
    changed = {name for name, old in zip(("email", "phone"), before, strict=True)
               if getattr(contact, name) and getattr(contact, name) != old}
    if changed:
        await suppressions.recall_erased(s, contact, changed)


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
    contact = await writable_contact(s, contact_id, now, seen=False)
    addresses = (contact.email, contact.phone)
    profile: dict[str, Any] = {
        "attributes": copy.deepcopy(contact.attributes or {}),
        **{name: copy.deepcopy(getattr(contact, name)) for name in PROFILE_COLUMNS},
    }
    for path, value in set.items():
        set_path(profile, profile_path(path), copy.deepcopy(value))
    for path in unset:
        unset_path(profile, profile_path(path))
    tags = [t for t in contact.tags or [] if t not in remove_tags]
    contact.tags = union(tags, [t for t in add_tags if t not in remove_tags])
    contact.attributes = profile["attributes"]
    contact.timezone = timezone_trait(profile["timezone"])
    contact.email = _text("email", profile["email"])
    contact.phone = _text("phone", profile["phone"])
    contact.push_tokens = token_list(profile["push_tokens"])
    contact.web_push = merge_subscriptions([], profile["web_push"])
    contact.consent = profile["consent"] if isinstance(profile["consent"], dict) else {}
    contact.suppressed = token_list(profile["suppressed"])
    contact.updated_at = now
    await _recall_suppressions(s, contact, addresses)
    await s.flush()
    return contact


async def create_contact(s: AsyncSession, contact: ContactSnapshot, now: datetime) -> Contact:
    """Write a whole contact as given (simulations, imports): profile, scores and segments.

    An existing contact with the same id is overwritten, its scores set to the given totals and
    its segments made exactly the given ones.
    """
    row = await writable_contact(s, contact.id, now, seen=False)
    addresses = (row.email, row.phone)
    row.timezone = timezone_trait(contact.timezone)
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
    await _recall_suppressions(s, row, addresses)
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


def _text(name: str, value: Any) -> str | None:
    """`text_trait` within the length of the contact's column `name`."""
    return text_trait(name, value, getattr(Contact.__table__.c[name].type, "length", None))
