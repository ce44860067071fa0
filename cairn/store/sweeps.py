"""The sweeps' set-based queries: a batch of contacts read, judged and counted in a few queries.

The hourly segment sweep decides every contact. Asking per contact and per rule would cost one
query per contact and rule; here a batch (a page of contacts by id) is read with its memberships
and scores in three queries (`contact_rows_after`, `snapshots`), its `has_done` counts and sums in
two (`BatchHistory`) and its due inactivity decays in one per event name (`due_decays`);
`changing_contacts` puts them together into the read-only pass that finds who changes. The
date-attribute and schedule sweeps page through contacts and segment members here too.

What a segment rule means is `cairn.segments`, when a decay is due `cairn.scoring`; the activity
that writes the changes and routes their events is `activities.sweeps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Row, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.conditions import (
    ConditionScope,
    HasDone,
    ReachableSpec,
    Verdict,
    evaluate_event_filter,
    event_field,
)
from cairn.conditions import window_start as has_done_window
from cairn.contact import ContactSnapshot
from cairn.journey_run import EventMessage
from cairn.reachability import reachability
from cairn.scoring import InactivityDecay
from cairn.segments import Memo, Segment, has_done_specs, members
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store.schema import Contact, Event, Score, SegmentMembership, as_utc

_CONTACT_COLUMNS = (
    Contact.id, Contact.timezone, Contact.email, Contact.phone, Contact.push_tokens,
    Contact.web_push, Contact.consent, Contact.suppressed, Contact.attributes, Contact.tags,
    Contact.first_seen_at, Contact.last_seen_at, Contact.created_at,
)
"""What a sweep reads of a contact: the snapshot's columns, and `created_at` for decays."""


# --------------------------------------------------------------------------- pages of contacts


def _page(query: Any, column: Any, after: str | None, limit: int) -> Any:
    """Keyset pagination: the next `limit` ids after the cursor `after`, in id order."""
    if after is not None:
        query = query.where(column > after)
    return query.order_by(column).limit(limit)


async def contact_rows_after(s: AsyncSession, after: str | None, limit: int) -> list[Row[Any]]:
    """The next `limit` contacts after the cursor, as the segment sweep reads them."""
    return list((await s.execute(_page(select(*_CONTACT_COLUMNS), Contact.id, after, limit))).all())


async def contact_rows(s: AsyncSession, contact_ids: list[str]) -> list[Row[Any]]:
    """These contacts, as the segment sweep reads them, in id order."""
    return list((await s.execute(
        select(*_CONTACT_COLUMNS).where(Contact.id.in_(contact_ids)).order_by(Contact.id)
    )).all())


async def contacts_after(s: AsyncSession, after: str | None, limit: int) -> list[Contact]:
    """The next `limit` whole contacts after the cursor (the date-attribute sweep)."""
    return list(await s.scalars(_page(select(Contact), Contact.id, after, limit)))


async def scheduled_contact_ids(
    s: AsyncSession, segment: str | None, after: str | None, limit: int | None,
    upto: str | None = None,
) -> list[str]:
    """The next `limit` contacts after the cursor (and up to `upto`, inclusive, when given)
    that a schedule enters: the open members of `segment`, or every contact when there is
    none."""
    if segment is None:
        query, column = select(Contact.id), Contact.id
    else:
        query = select(SegmentMembership.contact_id).distinct().where(
            SegmentMembership.segment == segment,
            SegmentMembership.exited_at.is_(None),
        )
        column = SegmentMembership.contact_id
    if upto is not None:
        query = query.where(column <= upto)
    if after is not None:
        query = query.where(column > after)
    query = query.order_by(column)
    if limit is not None:
        query = query.limit(limit)
    return list(await s.scalars(query))


async def imported_events(
    s: AsyncSession, import_id: str, journey: str, after: str | None, limit: int | None,
    upto: str | None = None,
) -> list[Event]:
    """The `journey_imported` events an import stored for a journey, by message id (after the
    cursor, up to `upto` inclusive, at most `limit`)."""
    query = select(Event).where(Event.message_id.startswith(f"import/{import_id}/",
                                                            autoescape=True),
                                Event.message_id.endswith(f"/journey/{journey}",
                                                          autoescape=True))
    if upto is not None:
        query = query.where(Event.message_id <= upto)
    if after is not None:
        query = query.where(Event.message_id > after)
    query = query.order_by(Event.message_id)
    if limit is not None:
        query = query.limit(limit)
    return list(await s.scalars(query))


async def imported_bounds(s: AsyncSession, import_id: str, journey: str,
                          batch_size: int) -> list[str]:
    """The last message id of every full batch of an import's entries but the last batch."""
    bounds: list[str] = []
    after: str | None = None
    while True:
        page = await imported_events(s, import_id, journey, after, batch_size + 1)
        if len(page) <= batch_size:
            return bounds
        after = page[batch_size - 1].message_id
        bounds.append(after)


async def scheduled_bounds(s: AsyncSession, segment: str | None, batch_size: int) -> list[str]:
    """The last contact id of every full batch of a schedule's contacts but the last batch:
    the bounds that let the batches run side by side. Reads ids only, a page at a time."""
    bounds: list[str] = []
    after: str | None = None
    while True:
        page = await scheduled_contact_ids(s, segment, after, batch_size + 1)
        if len(page) <= batch_size:
            return bounds
        after = page[batch_size - 1]
        bounds.append(after)


async def unrouted_sweep_events(
    s: AsyncSession, sweep_id: str, contact_ids: list[str]
) -> list[int]:
    """Events a sweep stored for these contacts and did not route yet (an earlier attempt of the
    batch crashed), oldest first."""
    return list(await s.scalars(
        select(Event.id).where(
            Event.contact_id.in_(contact_ids), Event.routed_at.is_(None),
            Event.message_id.startswith(f"sweep/{sweep_id}/", autoescape=True),
        ).order_by(Event.id)
    ))


# --------------------------------------------------------------------------- judging a batch


async def changing_contacts(s: AsyncSession, timed: list[Segment],
                            decays: list[InactivityDecay], rows: list[Row[Any]],
                            now: datetime) -> list[str]:
    """The contacts of a batch that change at `now`: a decay due, or a time-based segment.

    A read-only pass in one session: most contacts change nothing in a given hour, and deciding
    them with a few queries for the whole batch (memberships, scores, one per `has_done` rule,
    one per decay) and without reasons (`members`) is what keeps a sweep over everyone cheap.
    """
    changing = {due.contact_id for due in await due_decays(s, decays, rows, now)}
    if timed:
        contacts = await snapshots(s, rows)
        specs = has_done_specs(timed)
        for moment, group in by_moment(contacts, now).items():
            history = BatchHistory(s, [c.id for c in group], moment, specs)
            memo: Memo = {}  # one moment, one set of definitions: verdicts shared by the group
            for contact in group:
                if contact.id in changing:
                    continue
                before = set(contact.segments)
                decided = await members(timed, contact, history.scope(contact, moment), memo)
                if any(member != (key in before) for key, member in decided.items()):
                    changing.add(contact.id)
    return sorted(changing)


def _judged_at(last_seen_at: datetime | None, now: datetime) -> datetime:
    """When a contact is judged: the sweep's moment, or their latest activity if it is later.

    As ingest decides (`ProfileRules`): a contact active since the sweep began is judged as of
    that activity, so the sweep never undoes what their newer events established (a login after
    `now` keeps them out of `about_to_churn`, and spares them a decay for no login).
    """
    seen = as_utc(last_seen_at)
    return seen if seen is not None and seen > now else now


def by_moment(contacts: dict[str, ContactSnapshot],
              now: datetime) -> dict[datetime, list[ContactSnapshot]]:
    """Contacts grouped by the moment they are judged at: nearly all of them at `now`."""
    groups: dict[datetime, list[ContactSnapshot]] = {}
    for contact in contacts.values():
        groups.setdefault(_judged_at(contact.last_seen_at, now), []).append(contact)
    return groups


@dataclass(frozen=True)
class DueDecay:
    """An inactivity decay due for a contact: the period it closes and when it was judged."""

    contact_id: str
    decay: InactivityDecay
    since: datetime
    at: datetime

    @property
    def key(self) -> str:
        return self.decay.key(self.contact_id, self.since)


async def due_decays(s: AsyncSession, decays: list[InactivityDecay], rows: list[Row[Any]],
                     now: datetime) -> list[DueDecay]:
    """Every inactivity decay due for the batch's contacts and not yet recorded.

    A period starts at the contact's last `without` event at or before the moment the contact is
    judged (one grouped query per event name for the batch, and one per contact judged later
    than `now`), or when the contact was first seen (created, if never seen).
    """
    if not decays or not rows:
        return []
    ids = [row.id for row in rows]
    moments = {row.id: _judged_at(row.last_seen_at, now) for row in rows}
    last: dict[str, dict[str, datetime]] = {}
    for event in sorted({decay.event for decay in decays}):
        found = last[event] = {}
        for contact_id, at in await s.execute(
            select(Event.contact_id, func.max(Event.timestamp)).where(
                Event.contact_id.in_(ids), Event.name == event, Event.timestamp <= now,
            ).group_by(Event.contact_id)
        ):
            moment = as_utc(at)
            if moment is not None:
                found[contact_id] = moment
        for contact_id, judged in moments.items():
            if judged > now:  # active since the sweep began: their later events count too
                later = as_utc(await s.scalar(select(func.max(Event.timestamp)).where(
                    Event.contact_id == contact_id, Event.name == event,
                    Event.timestamp <= judged)))
                if later is not None:
                    found[contact_id] = later
    due: list[DueDecay] = []
    for row in rows:
        for decay in decays:
            since = last[decay.event].get(row.id) or as_utc(row.first_seen_at or row.created_at)
            if since is not None and decay.due(since, moments[row.id]):
                due.append(DueDecay(row.id, decay, since, moments[row.id]))
    recorded = await scores_repo.recorded_keys(s, (d.key for d in due))
    return [d for d in due if d.key not in recorded]


async def snapshots(s: AsyncSession, rows: list[Row[Any]]) -> dict[str, ContactSnapshot]:
    """The batch's contacts as `cairn.store.contacts.snapshot` reads them, from rows already
    read, with two more queries (memberships, scores) for the whole batch instead of three per
    contact."""
    ids = [row.id for row in rows]
    segments = await segments_repo.open_memberships(s, ids)
    scores: dict[str, dict[str, int]] = {cid: {} for cid in ids}
    for contact_id, dimension, total in await s.execute(
        select(Score.contact_id, Score.dimension, Score.total).where(Score.contact_id.in_(ids))
    ):
        scores[contact_id][dimension] = int(total)
    return {row.id: ContactSnapshot(
        id=row.id, timezone=row.timezone, email=row.email, phone=row.phone,
        push_tokens=[str(t) for t in row.push_tokens or [] if t],
        web_push=[sub for sub in row.web_push or []
                  if isinstance(sub, dict) and isinstance(sub.get("endpoint"), str)],
        consent=dict(row.consent or {}),
        suppressed=[str(c) for c in row.suppressed or []],
        attributes=dict(row.attributes or {}), tags=[str(t) for t in row.tags or []],
        scores=scores[row.id], segments=segments.get(row.id, []),
        first_seen_at=row.first_seen_at, last_seen_at=row.last_seen_at,
    ) for row in rows}


class BatchHistory:
    """`has_done` counts and sums for a batch of contacts, in two queries for the whole batch.

    Decides exactly as `ProfileRules` does for one contact (same window, both ends inclusive, the
    same `where` evaluation and the same summing). The rules of `specs` are answered together on
    the first question: one `GROUP BY contact` query counts for every rule without `where` and
    `sum` (a conditional count per rule), and one query reads the rows of the events the other
    rules filter or sum, each row turned into an event scope once and dealt out to its rules.
    A rule not in `specs` gets a query of its own when first asked about.
    """

    def __init__(self, s: AsyncSession, contact_ids: list[str], now: datetime,
                 specs: Iterable[HasDone] = ()) -> None:
        self.s = s
        self.ids = contact_ids
        self.now = now
        self._planned = list({id(spec): spec for spec in specs}.values())
        self._counts: dict[int, tuple[HasDone, dict[str, int]]] = {}
        self._events: dict[int, tuple[HasDone, dict[str, list[dict[str, Any]]]]] = {}

    def scope(self, contact: ContactSnapshot, now: datetime) -> ConditionScope:
        return ConditionScope(
            now=now,
            count_events=partial(self.count, contact.id),
            sum_events=partial(self.sum, contact.id),
            reachable=partial(_reachable, contact),
        )

    async def count(self, contact_id: str, spec: HasDone) -> int:
        if self._planned:
            await self._load_planned()
        if _reads_rows(spec):
            return len((await self._matching(spec)).get(contact_id, ()))
        cached = self._counts.get(id(spec))
        if cached is None:
            await self._count_all([spec])
            cached = self._counts[id(spec)]
        return cached[1].get(contact_id, 0)

    async def sum(self, contact_id: str, spec: HasDone) -> float:
        assert spec.sum is not None  # evaluate only asks for sums of has_done with `sum`
        total = 0.0
        for scope in (await self._matching(spec)).get(contact_id, ()):
            value = event_field(scope, spec.sum)
            if isinstance(value, int | float) and not isinstance(value, bool):
                total += value
        return total

    async def _load_planned(self) -> None:
        planned, self._planned = self._planned, []
        counted = [spec for spec in planned if not _reads_rows(spec)]
        if counted:
            await self._count_all(counted)
        rowed = [spec for spec in planned if _reads_rows(spec)]
        if rowed:
            await self._read_all(rowed)

    async def _matching(self, spec: HasDone) -> dict[str, list[dict[str, Any]]]:
        """The batch's events `spec` counts, as event scopes per contact (filtered by `where`)."""
        if self._planned:
            await self._load_planned()
        if id(spec) not in self._events:
            await self._read_all([spec])
        return self._events[id(spec)][1]

    async def _count_all(self, specs: list[HasDone]) -> None:
        """One query: per contact, how many events each rule of `specs` counts."""
        query = select(Event.contact_id, *[
            func.sum(case((self._counted_by(spec), 1), else_=0)) for spec in specs
        ]).where(self._events_of(specs)).group_by(Event.contact_id)
        found: list[dict[str, int]] = [{} for _ in specs]
        for row in await self.s.execute(query):
            for index, counted in enumerate(row[1:]):
                if counted:
                    found[index][row[0]] = int(counted)
        for spec, counts in zip(specs, found, strict=True):
            self._counts[id(spec)] = (spec, counts)

    async def _read_all(self, specs: list[HasDone]) -> None:
        """One query: the rows of the events `specs` read, dealt out to the rules matching them."""
        found: list[dict[str, list[dict[str, Any]]]] = [{} for _ in specs]
        windows = [has_done_window(spec, self.now, None) for spec in specs]
        query = select(Event.contact_id, Event.message_id, Event.name, Event.properties,
                       Event.timestamp).where(self._events_of(specs)).order_by(Event.id)
        for row in await self.s.execute(query):
            scope: dict[str, Any] | None = None
            for index, spec in enumerate(specs):
                since = windows[index]
                if spec.event != row.name or (since is not None and row.timestamp < since):
                    continue
                if scope is None:
                    scope = EventMessage(message_id=row.message_id, event=row.name,
                                         contact_id=row.contact_id,
                                         properties=dict(row.properties or {}),
                                         timestamp=row.timestamp).as_scope()
                if spec.where is None or evaluate_event_filter(spec.where, scope,
                                                               self.now).result:
                    found[index].setdefault(row.contact_id, []).append(scope)
        for spec, matching in zip(specs, found, strict=True):
            self._events[id(spec)] = (spec, matching)

    def _counted_by(self, spec: HasDone) -> Any:
        """Whether an event row (already in the batch, at or before now) counts for `spec`."""
        since = has_done_window(spec, self.now, None)
        if since is None:
            return Event.name == spec.event
        return and_(Event.name == spec.event, Event.timestamp >= since)

    def _events_of(self, specs: list[HasDone]) -> Any:
        """The batch's events at or before now that any of `specs` may count: per event name,
        from the earliest window start of the rules reading it (all history when one has none)."""
        earliest: dict[str, datetime | None] = {}
        for spec in specs:
            since = has_done_window(spec, self.now, None)
            if spec.event in earliest:
                known = earliest[spec.event]
                since = None if since is None or known is None else min(since, known)
            earliest[spec.event] = since
        by_name = [Event.name == name if since is None
                   else and_(Event.name == name, Event.timestamp >= since)
                   for name, since in sorted(earliest.items())]
        return and_(Event.contact_id.in_(self.ids), Event.name.in_(sorted(earliest)),
                    Event.timestamp <= self.now, or_(*by_name))


def _reads_rows(spec: HasDone) -> bool:
    """A rule with `where` or `sum` needs the events' properties, not only their number."""
    return spec.where is not None or spec.sum is not None


def _reachable(contact: ContactSnapshot, spec: ReachableSpec) -> Verdict:
    return reachability(contact, spec.channel, spec.category)


__all__ = [
    "BatchHistory",
    "DueDecay",
    "by_moment",
    "changing_contacts",
    "contact_rows",
    "contact_rows_after",
    "contacts_after",
    "due_decays",
    "scheduled_contact_ids",
    "snapshots",
    "unrouted_sweep_events",
]
