"""Ingest: store Segment calls once, update the contact, then hand the stored events to the router.

The order is the contract: an event is committed (with its contact) before anyone is told it was
accepted, and only then routed. Routing can fail (Temporal down, a network blip) without losing
anything: the event stays in the store with `routed_at` NULL, and routing it again later is safe.
A repeated `messageId` is acknowledged as a duplicate and neither stored nor routed a second time.

This module does not parse HTTP (that is `starter.api.ingest`) and does not decide which journeys an
event concerns (that is `cairn.events.router`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload

from pydantic import TypeAdapter
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError, RPCStatusCode

from cairn import metrics
from cairn.events import attribute_changes
from cairn.events.calls import (
    AliasCall,
    BatchCall,
    GroupCall,
    IdentifyCall,
    PageCall,
    ScreenCall,
    SegmentCallType,
    TrackCall,
)
from cairn.events.geofencing import LOCATION_UPDATED, Geofencing
from cairn.events.profile_rules import Prepared, ProfileRules
from cairn.events.router import PublishedCatalog, RouteDecision, Router, drop_twins
from cairn.group_commit import GroupCommit
from cairn.journey_run import EventMessage
from cairn.log import get_logger
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import identity
from cairn.store import rejected as rejected_repo
from cairn.store.db import Store
from cairn.store.events import ClaimedEvent
from cairn.store.schema import Contact, Event

log = get_logger(__name__)

IDENTIFY_EVENT = "identify"
"""The event name an `identify` call is stored (and routed) under; its properties are the traits."""

PAGE_EVENT = "page_viewed"
"""The event name a `page` call is stored under; `properties.url` is the page visited."""

SCREEN_EVENT = "screen_viewed"
"""The event name a `screen` call (a mobile app's page) is stored under; `properties.name` is the
screen."""

GROUP_EVENT = "group"
"""The event name a `group` call is stored under: `properties` are `groupId` and the `traits`."""

ALIAS_EVENT = "alias"
"""The event name an `alias` is recorded under (bookkeeping: marked routed at once)."""

GROUP_ATTRIBUTE = "group"
"""The contact attribute a `group` call sets: `{"id": groupId, ...traits}` (`group.plan`)."""


ROUTING_LANES = 8
"""Contacts routed side by side by one `route_events` call (each contact's events in order)."""

ROUTING_LEASE = timedelta(seconds=3)
"""How long a claim on an event holds unless renewed; a router renews its claims every third of
it while it routes, so a router that died is taken over (by the relay) a few seconds later."""

ROUTING_BACKOFF = timedelta(seconds=2)
"""The wait after a first failed routing attempt; it doubles with each further failure."""

QUIET_DECISIONS_EVERY = timedelta(minutes=1)
"""How often `cairn api` re-decides a contact's time-based segments for events nothing else
hears (`Ingest.quiet_decisions_every`; the simulator decides every time)."""

DECISIONS_REMEMBERED = 200_000
"""Contacts whose latest decision a routing process remembers (the oldest half is forgotten)."""

MAX_ROUTING_ATTEMPTS = 5
"""Failed routing attempts after which an event is quarantined (about 30 s with the backoff)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _RoutingPass:
    """One `route_events` call: its claim token, what it routed, whether an outage stopped it."""

    claimant: str
    done: dict[int, list[RouteDecision]] = field(default_factory=dict)
    outage: bool = False
    prepared: dict[str, Prepared] = field(default_factory=dict)
    """What the profile rules read ahead for the call's events (`ProfileRules.prepare`)."""


def _outage(error: BaseException) -> bool:
    """Whether a routing failure says nothing about the event: Temporal or the store is away.

    Such failures are not the event's fault, so they count no attempt (an outage must not
    quarantine everything accepted meanwhile).
    """
    if isinstance(error, RPCError):
        return error.status in _OUTAGE_STATUSES
    if isinstance(error, OSError | TimeoutError | OperationalError):
        return True
    return isinstance(error, RuntimeError) and "client connect" in str(error).lower()


_OUTAGE_STATUSES = frozenset({
    RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
})


@dataclass
class IngestResult:
    """What happened to one call: its message id, its stored row, and where it was routed.

    `routed` is False when routing was not asked for, found no router, or failed (the event then
    waits in the store, unrouted, for a later attempt).
    """

    message_id: str
    event_id: int
    duplicate: bool
    routes: list[RouteDecision] = field(default_factory=list)
    routed: bool = False
    derived: list[int] = field(default_factory=list)
    """Ids of events stored with the call (its `attribute_changed` events), routed after it."""


class Ingest:
    """Stores calls and routes them; `router=None` stores only (e.g. an API without Temporal).

    `clock` gives the receive time, and the event time of calls without a timestamp; simulations
    pass their own. `profile_rules` (segments and scoring) and `geofencing` (fence crossings of
    `location_updated` events) see every event just before it is routed. With
    `background_routing=False`, `route_soon` leaves the events to another process's relay
    (`cairn api` routes in a process of its own, `starter.routing`). `quiet_decisions_every`
    decides a contact's time-based segments at most that often for events nothing else hears
    (see `_route_recently_decided`). `attribute_changes`
    stores an `attribute_changed` event per trait an identify changes
    (`cairn.events.attribute_changes`);
    the `cairn dev` / `cairn api` processes, imports and simulations switch it on.
    """

    def __init__(
        self,
        store: Store,
        router: Router | None,
        *,
        clock: Callable[[], datetime] = utc_now,
        profile_rules: ProfileRules | None = None,
        geofencing: Geofencing | None = None,
        attribute_changes: bool = False,
        routing_lanes: int = ROUTING_LANES,
        routing_backoff: timedelta = ROUTING_BACKOFF,
        max_routing_attempts: int = MAX_ROUTING_ATTEMPTS,
        background_routing: bool = True,
        quiet_decisions_every: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.router = router
        self.clock = clock
        self.profile_rules = profile_rules
        self.geofencing = geofencing
        self.attribute_changes = attribute_changes
        self.routing_lanes = routing_lanes
        self.routing_backoff = routing_backoff
        self.max_routing_attempts = max_routing_attempts
        self.background_routing = background_routing
        self.quiet_decisions_every = quiet_decisions_every
        self._decided: dict[str, datetime] = {}
        """Per contact, the time of the latest event its segments were decided for."""
        self._soon: list[tuple[list[int], asyncio.Future[None]]] = []
        self._soon_task: asyncio.Task[None] | None = None
        self._arriving: GroupCommit[SegmentCallType, IngestResult] = GroupCommit(
            self._store_arrived, self._store_alone, name="cairn-ingest")

    async def track(self, call: TrackCall, *, route: bool = True) -> IngestResult:
        """Store a `track` call (and create or touch its contact) in one transaction, then route."""
        return (await self._ingest([call], route=route))[0]

    async def identify(self, call: IdentifyCall, *, route: bool = True) -> IngestResult:
        """Merge the traits into the contact and store an `identify` event, then route it."""
        return (await self._ingest([call], route=route))[0]

    async def page(self, call: PageCall, *, route: bool = True) -> IngestResult:
        """Store a `page` call as a `page_viewed` event (URL-visit segments read it), then route."""
        return (await self._ingest([call], route=route))[0]

    async def screen(self, call: ScreenCall, *, route: bool = True) -> IngestResult:
        """Store a `screen` call as a `screen_viewed` event, then route it."""
        return (await self._ingest([call], route=route))[0]

    async def group(self, call: GroupCall, *, route: bool = True) -> IngestResult:
        """Record the contact's group (its `group` attribute) and store a `group` event."""
        return (await self._ingest([call], route=route))[0]

    async def alias(self, call: AliasCall) -> IngestResult:
        """Fold `previousId` into `userId` (as `POST /v1/alias`); an alias is never routed.

        Raises `identity.AliasError` for an alias the store refuses.
        """
        return (await self._ingest([call], route=False))[0]

    async def batch(
        self,
        call: BatchCall | Sequence[SegmentCallType],
        *,
        route: bool = True,
        refused: Sequence[rejected_repo.Refusal] = (),
        endpoint: str = "/v1/batch",
    ) -> list[IngestResult]:
        """Store every call of a batch in one transaction, in order, then route the new ones.

        Each item is stored exactly as its own endpoint would store it (a `page` item as a
        `page_viewed` event, an `alias` as `/v1/alias` applies it); `call` is a batch body or its
        items. `refused` are the batch's items the door refused: they are kept in the
        rejected-calls store in the same transaction (`cairn.store.rejected`).
        """
        calls: list[SegmentCallType] = [*(call.batch if isinstance(call, BatchCall) else call)]
        return await self._ingest(calls, route=route, refused=refused, endpoint=endpoint)

    async def route_events(self, event_ids: Sequence[int]) -> dict[int, list[RouteDecision]]:
        """Route stored events and mark each routed; never raises for routing failures.

        Exactly once: the events are claimed first (`events_repo.claim_events`, a conditional
        UPDATE with a lease), so when the API's background routing and the relay reach for the
        same event, one of them routes it and the other skips it.

        Each contact's events are routed in order, in one lane per contact; lanes run side by
        side (`routing_lanes` at a time). An event whose routing fails is retried with backoff
        (`routing_backoff`, doubled per attempt) and quarantined after `max_routing_attempts`
        failures; until then the contact's later events wait behind it (they are given back
        unrouted), while other contacts' events never do. Failures that are outages (Temporal
        or the store unreachable) count no attempt: the events of the pass are given back
        untouched and the relay tries them again.

        Returns the decisions of the events that were routed.
        """
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}
        # The published catalog, read once for the call (before claiming: should the store
        # fail here, nothing is left claimed).
        catalog = await self.router.catalog() if self.router is not None else None
        settled: dict[int, list[RouteDecision]] = {}
        if self.quiet_decisions_every and self.router is not None and catalog is not None:
            settled = await self._route_recently_decided(ids, catalog)
            ids = [event_id for event_id in ids if event_id not in settled]
            if not ids:
                return settled
        claimant = uuid.uuid4().hex
        heads = await self._claim(ids, claimant, heads=True)
        return await self._route_claimed(claimant, heads, catalog, settled)

    async def _route_claimed(
        self, claimant: str, heads: list[ClaimedEvent] | list[Event],
        catalog: PublishedCatalog | None, settled: dict[int, list[RouteDecision]],
    ) -> dict[int, list[RouteDecision]]:
        """`route_events` once the events are claimed by `claimant` (`heads`, or the whole
        rows when the claim read them already)."""
        run = _RoutingPass(claimant, done=dict(settled))
        rows: list[Event]
        if all(isinstance(head, Event) for head in heads):
            rows = [head for head in heads if isinstance(head, Event)]
        else:
            # The rest is read whole (properties and all) for the hooks and the router.
            async with self.store.session() as session:
                rows = await events_repo.events_by_id(session, [head.id for head in heads])
        lanes: dict[str, list[Event]] = {}
        for row in rows:
            lanes.setdefault(row.contact_id, []).append(row)
        if self.profile_rules is not None and len(rows) > 1:
            try:
                run.prepared = await self.profile_rules.prepare(
                    [events_repo.event_message(row) for row in rows])
            except Exception as error:  # each event then reads for itself (and fails there)
                log.warning("profile_rules.not_prepared", error=str(error),
                            error_type=type(error).__name__)
        await self._route_quiet_lanes(lanes, run, catalog)
        renewing = asyncio.create_task(self._renew_claims(claimant))
        started: list[tuple[str, str]] = []
        try:
            with (self.router.routing_by(catalog)
                  if self.router is not None and catalog is not None
                  else contextlib.nullcontext()), Router.dropping_twins_later(started):
                await self._route_lanes(lanes, run)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            # One write for the whole call: on SQLite every write transaction queues behind the
            # others, and a write per event was most of routing's time. Should this write not
            # happen (a crash), the claims lapse and the relay routes the events again, which
            # the router makes harmless (entries keyed by the trigger's message id). The twins
            # of the entries the call started (`Router._drop_twins`) are dropped in it too.
            routed = sorted(run.done.keys() - settled.keys())
            if routed or started:
                async with self.store.session() as session, session.begin():
                    await drop_twins(session, started)
                    if routed:
                        await events_repo.mark_routed(session, routed, self.clock())
                metrics.EVENTS_ROUTED.inc(len(routed))
        return {event_id: run.done[event_id] for event_id in sorted(run.done)}

    async def _route_recently_decided(
        self, event_ids: list[int], catalog: PublishedCatalog
    ) -> dict[int, list[RouteDecision]]:
        """Route at once, and without claiming them, the quiet events of contacts whose
        segments were decided moments ago; returns them (each with no decision).

        A quiet event (`_route_quiet_lanes`) can change a membership only through time: a
        window that elapsed or an age that was reached since the contact's last decision. Within
        `quiet_decisions_every` of that decision the answer is taken as the same; a threshold
        crossed in between is found by the next decision, or by the segment sweep, which
        re-decides every contact as time passes anyway (hourly). So a contact's quiet events
        cost one decision per window, not one each; bursts (a session's page views and clicks)
        are the common case on a busy site. Routing such an event reaches no journey and
        decides nothing, so two routers doing it at once would do no harm: it is marked routed
        in one conditional write for all of them, without the claim the other events need.
        A contact whose earlier event waits for a retry keeps its order: its events go the
        usual way.
        """
        window = self.quiet_decisions_every
        now = utc_now()
        async with self.store.session() as session:
            heads = await events_repo.routable_heads(session, event_ids, now, ROUTING_LEASE)
            lanes: dict[str, list[ClaimedEvent]] = {}
            for head in heads:
                lanes.setdefault(head.contact_id, []).append(head)
            candidates = [contact for contact in lanes if contact in self._decided]
            failing = (await events_repo.first_failing_by_contact(session, candidates)
                       if candidates else {})
        quiet: list[int] = []
        for contact_id in candidates:
            decided = self._decided[contact_id]
            if contact_id not in failing and all(
                    decided <= head.timestamp < decided + window
                    and self._quiet(head.name, catalog) for head in lanes[contact_id]):
                quiet.extend(head.id for head in lanes[contact_id])
        if not quiet:
            return {}
        async with self.store.session() as session, session.begin():
            marked = await events_repo.mark_routed_if_unclaimed(session, quiet, self.clock(),
                                                                now, ROUTING_LEASE)
        metrics.EVENTS_ROUTED.inc(len(marked))
        return {event_id: [] for event_id in sorted(marked)}

    def _remember_decided(self, contact_id: str, moment: datetime) -> None:
        if not self.quiet_decisions_every:
            return
        if len(self._decided) >= DECISIONS_REMEMBERED:  # forget the oldest half
            for stale in list(self._decided)[:DECISIONS_REMEMBERED // 2]:
                del self._decided[stale]
        self._decided.pop(contact_id, None)
        self._decided[contact_id] = moment

    async def _route_quiet_lanes(self, lanes: dict[str, list[Event]], run: _RoutingPass,
                                 catalog: PublishedCatalog | None) -> None:
        """Route at once, without a transaction per event, the lanes whose events nothing hears.

        A quiet event triggers no journey, no journey waits for it, and the profile rules read
        nothing of it but the contact's clock (`ProfileRules.reads_only_the_clock`); most of a
        busy site's events are such. Routing one is deciding the contact's time-based segments
        again, as of the contact's latest activity, which is the same answer for all of the
        contact's events in this pass: it is decided once, from what `prepare` read ahead for
        every contact together. A lane whose decision changes a membership, or that holds the
        contact's earliest event (every segment is decided then), is left to the usual path,
        which records the change.
        """
        if self.router is None or catalog is None:
            return
        rules = self.profile_rules
        for contact_id, lane in list(lanes.items()):
            if not all(self._quiet(row.name, catalog) for row in lane):
                continue
            if rules is not None and rules.segments:
                prepared = run.prepared.get(lane[0].message_id)
                if prepared is None:
                    continue
                first_seen = prepared.contact.first_seen_at
                if first_seen is None or any(row.timestamp <= first_seen for row in lane):
                    continue
                if not await rules.unchanged(prepared, lane[0].name):
                    continue
                run.prepared.pop(lane[0].message_id, None)
            for row in lane:
                run.done[row.id] = []
            self._remember_decided(contact_id, max(row.timestamp for row in lane))
            del lanes[contact_id]

    def _quiet(self, event_name: str, catalog: PublishedCatalog) -> bool:
        if event_name in catalog.triggered_by or event_name in catalog.listening_to:
            return False
        if self.geofencing is not None and event_name == LOCATION_UPDATED:
            return False
        return self.profile_rules is None or self.profile_rules.reads_only_the_clock(event_name)

    async def _renew_claims(self, claimant: str) -> None:
        """Keep this call's claims alive while it routes (a long pass outlives one lease)."""
        while True:
            await asyncio.sleep(ROUTING_LEASE.total_seconds() / 3)
            try:
                async with self.store.session() as session, session.begin():
                    await events_repo.renew_claims(session, claimant, utc_now())
            except OperationalError as error:  # the store is busy: the next renewal may pass
                log.warning("route.claims_not_renewed", error=str(error))

    async def _route_lanes(self, lanes: dict[str, list[Event]], run: _RoutingPass) -> None:
        if len(lanes) == 1 or self.routing_lanes <= 1:
            for lane in lanes.values():
                await self._route_lane(lane, run)
            return
        gate = asyncio.Semaphore(self.routing_lanes)

        async def guarded(lane: list[Event]) -> None:
            async with gate:
                await self._route_lane(lane, run)

        await asyncio.gather(*(guarded(lane) for lane in lanes.values()))

    async def route_soon(self, event_ids: Sequence[int]) -> None:
        """Route these events together with those other callers hand in meanwhile; returns once
        they were routed (or left for the relay).

        For the API's background routing: under load many requests accept events at once, and
        one `route_events` call for all of them reads ahead for every contact together and
        claims and marks them in one write each, where a call per request would not.
        """
        if not self.background_routing:  # another process routes (`starter.routing`)
            return
        loop = asyncio.get_running_loop()
        running = self._soon_task
        if running is not None and running.get_loop() is not loop:
            self._soon, running = [], None  # left over from another event loop (tests)
        done: asyncio.Future[None] = loop.create_future()
        self._soon.append((list(event_ids), done))
        if running is None or running.done():
            self._soon_task = asyncio.create_task(self._route_pending(), name="cairn-routing")
        await done

    async def _route_pending(self) -> None:
        while self._soon:
            taken, self._soon = self._soon, []
            try:
                await self.route_events([i for ids, _ in taken for i in ids])
            except Exception as error:  # the store is away: the relay routes them later
                log.warning("route.deferred", error=str(error), error_type=type(error).__name__,
                            events=sum(len(ids) for ids, _ in taken))
            finally:
                for _, done in taken:
                    if not done.done():
                        done.set_result(None)

    @overload
    async def _claim(self, event_ids: list[int], claimant: str) -> list[Event]: ...

    @overload
    async def _claim(self, event_ids: list[int], claimant: str, *,
                     heads: Literal[True]) -> list[ClaimedEvent]: ...

    async def _claim(self, event_ids: list[int], claimant: str, *,
                     heads: bool = False) -> list[Event] | list[ClaimedEvent]:
        """Claim what is routable; give back at once what waits behind a contact's failing event.

        With `heads`, only what routing reads first is read back (`events_repo.ClaimedEvent`).
        """
        async with self.store.session() as session, session.begin():
            return await _claim_in(session, event_ids, claimant, heads=heads)

    async def _route_lane(self, lane: list[Event], run: _RoutingPass) -> None:
        """One contact's claimed events, in order; see `route_events`."""
        queue = deque(lane)
        while queue:
            row = queue.popleft()
            if run.outage:
                await self._release([row.id, *(r.id for r in queue)], run.claimant)
                return
            message = events_repo.event_message(row)
            try:
                decisions, derived = await self._route_one(
                    message, run.prepared.pop(message.message_id, None))
            except Exception as error:
                if _outage(error):
                    run.outage = True
                    log.warning("route.deferred", message_id=message.message_id,
                                contact=message.contact_id, error=str(error),
                                error_type=type(error).__name__)
                    await self._release([row.id, *(r.id for r in queue)], run.claimant)
                    return
                if not await self._failed(row, error):
                    # The contact's later events wait behind the failing one until it is
                    # quarantined: routing them first could enter a journey out of order.
                    await self._release([r.id for r in queue], run.claimant)
                    return
                continue
            if self.router is None:  # hooks applied; the event waits for a router (the relay)
                await self._release([row.id], run.claimant)
            else:
                run.done[row.id] = decisions
                self._remember_decided(row.contact_id, row.timestamp)
            if derived:
                queue.extend(await self._claim(derived, run.claimant))

    async def _route_one(
        self, message: EventMessage, prepared: Prepared | None = None
    ) -> tuple[list[RouteDecision], list[int]]:
        """The hooks, then the router, for one event: (decisions, ids of events it derived)."""
        derived: list[int] = []
        # Profile rules (segments and scoring) run after the commit and before routing, so
        # journeys see the new scores and memberships; they are idempotent per message, so a
        # retry (or the relay) applying them again changes nothing. Geofencing stores the fence
        # crossings of a location_updated event. What they store is routed next, in the lane.
        if self.profile_rules is not None:
            derived.extend(await self.profile_rules.apply(message, prepared))
        if self.geofencing is not None:
            derived.extend(await self.geofencing.apply(message))
        if self.router is None:
            return [], derived
        return await self.router.route(message), derived

    async def _failed(self, row: Event, error: Exception) -> bool:
        """Count a failed attempt: back off, or quarantine after the last one (then True)."""
        attempts = row.routing_attempts + 1
        now = utc_now()
        quarantine = attempts >= self.max_routing_attempts
        next_try = None if quarantine else now + self.routing_backoff * 2 ** (attempts - 1)
        reason = f"{type(error).__name__}: {error}"[:2000]
        async with self.store.session() as session, session.begin():
            await events_repo.record_routing_failure(session, row.id, error=reason, now=now,
                                                     next_try=next_try)
        log.warning("route.quarantined" if quarantine else "route.failed",
                    message_id=row.message_id, contact=row.contact_id, event_name=row.name,
                    attempts=attempts, error=reason,
                    next_try=next_try.isoformat() if next_try else None)
        return quarantine

    async def _release(self, event_ids: list[int], claimant: str) -> None:
        if event_ids:
            async with self.store.session() as session, session.begin():
                await events_repo.release_claims(session, event_ids, claimant)

    # ------------------------------------------------------------------ storing

    async def _ingest(
        self,
        calls: list[SegmentCallType],
        *,
        route: bool,
        refused: Sequence[rejected_repo.Refusal] = (),
        endpoint: str = "",
    ) -> list[IngestResult]:
        if not route and not refused and len(calls) == 1:
            return [await self._store_together(calls[0])]
        return await self._store_calls(calls, route=route, refused=refused, endpoint=endpoint)

    async def _store_together(self, call: SegmentCallType) -> IngestResult:
        """Store one call in the transaction of the calls that arrive while one is being
        written (`cairn.group_commit`: under load many single calls, `/v1/track` from many
        clients, arrive at once), and return once it is committed. The calls are stored in the
        order they arrived, exactly as one at a time would store them (`_store_calls`); should
        the shared transaction fail, each call is stored again on its own."""
        return await self._arriving.submit(call)

    async def _store_alone(self, call: SegmentCallType) -> IngestResult:
        return (await self._store_calls([call], route=False))[0]

    async def _store_arrived(self, calls: list[SegmentCallType]) -> list[IngestResult]:
        return await self._store_calls(calls, route=False)

    async def _store_calls(
        self,
        calls: list[SegmentCallType],
        *,
        route: bool,
        refused: Sequence[rejected_repo.Refusal] = (),
        endpoint: str = "",
    ) -> list[IngestResult]:
        received_at = self.clock()
        results: list[IngestResult] = []
        # The events stored here are claimed for routing in the same transaction, when nothing
        # else would route them first (`_route_recently_decided` routes only unclaimed events):
        # no one else can hold a claim on an event this transaction inserts, so a claim round
        # of its own (a write and its commit) would add nothing. The catalog is read before, so
        # that nothing is left claimed should the store fail there.
        claim_here = route and self.router is not None and not self.quiet_decisions_every
        catalog = await self.router.catalog() if claim_here and self.router is not None else None
        claimant = uuid.uuid4().hex
        claimed: list[Event] = []
        async with self.store.session() as session, session.begin():
            start = 0
            while start < len(calls):
                end = start
                while end < len(calls) and type(calls[end]) in _PLAIN_CALLS:
                    end += 1
                if end > start:  # plain events (one or a run of them): stored set-based
                    results.extend(await self._store_plain(session, calls[start:end],
                                                           received_at))
                else:
                    end = max(end, start + 1)
                    results.append(await self._store(session, calls[start], received_at))
                start = end
            if refused:
                await rejected_repo.record_refusals(session, refused, endpoint=endpoint,
                                                    received_at=received_at)
            if claim_here:
                stored_now = [i for r in results if not r.duplicate
                              for i in (r.event_id, *r.derived)]
                if stored_now:
                    # read whole at once: routing reads every event it stored (a trigger)
                    claimed = await _claim_in(session, stored_now, claimant, heads=False)
        accepted: dict[str, int] = {}
        for stored_call, result in zip(calls, results, strict=False):
            if not result.duplicate:
                accepted[stored_call.type] = accepted.get(stored_call.type, 0) + 1
        for call_type, count in accepted.items():
            metrics.EVENTS_ACCEPTED.labels(type=call_type).inc(count)
        metrics.count_rejected(endpoint, len(refused))
        own = [r.event_id for r in results if not r.duplicate]
        fresh = [i for r in results if not r.duplicate for i in (r.event_id, *r.derived)]
        if route and fresh:
            routed = (await self._route_claimed(claimant, claimed, catalog, {}) if claim_here
                      else await self.route_events(fresh))
            for result in results:
                if result.event_id in routed and not result.duplicate:
                    result.routes = routed[result.event_id]
                    result.routed = True
            # Events derived from the call (attribute_changed, segment_entered, score_crossed,
            # geofence crossings) were routed in the same pass; a single call reports their
            # decisions as its own consequences.
            derived = [ids for ids in routed if ids not in own]
            if len(results) == 1 and results[0].routed:
                for event_id in derived:
                    results[0].routes = [*results[0].routes, *routed[event_id]]
        return results

    async def _store_plain(
        self, session: AsyncSession, calls: list[SegmentCallType], received_at: datetime
    ) -> list[IngestResult]:
        """Store a run of plain event calls (track, page, screen) with a few statements for all
        of them, with exactly the results `_store` gives one call at a time: anonymous ids
        resolved in one query (none without anonymous calls), the new events inserted in one
        (inside the run the first call of a message id wins, later ones answer duplicate; a
        message id stored before is skipped, and its event found in one more query), the
        contacts of the new events created or seen in one (`contacts_repo.see_contacts`), ids
        in call order.
        """
        contact_ids = await contacts_repo.resolve_contact_ids(
            session, [(call.user_id, call.anonymous_id) for call in calls])
        fresh: dict[str, dict[str, Any]] = {}  # message id -> the row of its first call
        for call, contact_id in zip(calls, contact_ids, strict=True):
            if call.message_id in fresh:
                continue
            kind, name, properties = _STORED_AS[type(call)](call)
            fresh[call.message_id] = {
                "message_id": call.message_id, "type": kind, "contact_id": contact_id,
                "name": name, "properties": _json_ready(properties),
                "timestamp": call.timestamp or received_at, "received_at": received_at}
        inserted = await events_repo.insert_events(session, list(fresh.values()))
        stored = (await events_repo.stored_message_ids(
            session, [m for m in fresh if m not in inserted]) if len(inserted) < len(fresh)
            else {})
        sightings: dict[str, tuple[datetime, datetime, datetime]] = {}
        for message_id, row in fresh.items():
            if message_id not in inserted:
                continue
            contact_id, timestamp = row["contact_id"], row["timestamp"]
            first, earliest, latest = sightings.get(contact_id,
                                                    (timestamp, timestamp, timestamp))
            sightings[contact_id] = (first, min(earliest, timestamp), max(latest, timestamp))
        await contacts_repo.see_contacts(session, sightings)
        results: list[IngestResult] = []
        answered: set[str] = set()
        for call in calls:
            new = call.message_id in inserted and call.message_id not in answered
            event_id = (inserted[call.message_id] if call.message_id in inserted
                        else stored[call.message_id])
            answered.add(call.message_id)
            results.append(IngestResult(message_id=call.message_id, event_id=event_id,
                                        duplicate=not new))
        log.debug("ingest.stored_run", calls=len(calls),
                  stored=sum(1 for r in results if not r.duplicate))
        return results

    async def _store(
        self, session: AsyncSession, call: SegmentCallType, received_at: datetime
    ) -> IngestResult:
        timestamp = call.timestamp or received_at
        if isinstance(call, AliasCall):
            return await _store_alias(session, call, timestamp, received_at)
        # An anonymous id that an alias linked to a user is that user's (not a new visitor).
        contact_id = await contacts_repo.resolve_contact_id(session, call.user_id,
                                                            call.anonymous_id)
        kind, name, properties = _STORED_AS[type(call)](call)
        row, new = await events_repo.record_event(
            session,
            message_id=call.message_id,
            type=kind,
            contact_id=contact_id,
            name=name,
            properties=_json_ready(properties),
            timestamp=timestamp,
            received_at=received_at,
        )
        derived: list[int] = []
        if new:
            if isinstance(call, IdentifyCall):
                # --- attribute_changed hook: the old values exist only before the merge, and
                # the change events commit with it (a crash cannot lose them; the relay routes).
                before = (await attribute_changes.values_before(session, contact_id, call.traits)
                          if self.attribute_changes else {})
                contact = await contacts_repo.identify(session, contact_id, call.traits,
                                                       timestamp)
                if before:
                    derived = await attribute_changes.record_changes(
                        session, source_message_id=call.message_id, contact=contact,
                        before=before, timestamp=timestamp, received_at=received_at)
                # --- end of attribute_changed hook
            elif isinstance(call, GroupCall):
                # The group is a trait (`group`): joining or changing it is announced as an
                # identify's trait change is.
                before = (await attribute_changes.values_before(session, contact_id,
                                                                [GROUP_ATTRIBUTE])
                          if self.attribute_changes else {})
                contact = await _join_group(session, contact_id, call, timestamp)
                if before:
                    derived = await attribute_changes.record_changes(
                        session, source_message_id=call.message_id, contact=contact,
                        before=before, timestamp=timestamp, received_at=received_at)
            else:
                await contacts_repo.ensure_contact(session, contact_id, timestamp)
        log.debug("ingest.stored" if new else "ingest.duplicate", type=kind, event_name=name,
                 message_id=call.message_id, contact=contact_id, event_id=row.id)
        return IngestResult(message_id=call.message_id, event_id=row.id, duplicate=not new,
                            derived=derived)


async def _claim_in(session: AsyncSession, event_ids: list[int], claimant: str, *,
                    heads: bool) -> Any:
    """`Ingest._claim` in the caller's transaction."""
    claim = events_repo.claim_event_heads if heads else events_repo.claim_events
    rows: list[Any] = await claim(session, event_ids, claimant, utc_now(), ROUTING_LEASE)
    if not rows:
        return []
    waiting = await events_repo.first_failing_by_contact(
        session, {row.contact_id for row in rows})
    # Behind a failing event this call holds, an event stays in its lane (routed if
    # the failing one is quarantined now); behind one it does not hold, it waits.
    held = {row.id for row in rows}
    blocked = [row.id for row in rows if row.contact_id in waiting
               and waiting[row.contact_id] < row.id
               and waiting[row.contact_id] not in held]
    if blocked:
        await events_repo.release_claims(session, blocked, claimant)
    left = set(blocked)
    return [row for row in rows if row.id not in left]


async def _store_alias(
    session: AsyncSession, call: AliasCall, timestamp: datetime, received_at: datetime
) -> IngestResult:
    """Record the alias once per messageId and fold the anonymous contact into the user.

    The alias is bookkeeping, not something journeys hear: it is marked routed at once.
    """
    row, new = await events_repo.record_event(
        session, message_id=call.message_id, type="alias", contact_id=call.user_id,
        name=ALIAS_EVENT, properties={"previousId": call.previous_id},
        timestamp=timestamp, received_at=received_at)
    if new:
        await identity.alias_contact(session, call.previous_id, call.user_id, timestamp)
        await events_repo.mark_routed(session, [row.id], received_at)
    log.info("contact.aliased" if new else "contact.alias_duplicate", contact=call.user_id,
             message_id=call.message_id)
    return IngestResult(message_id=call.message_id, event_id=row.id, duplicate=not new)


async def _join_group(
    session: AsyncSession, contact_id: str, call: GroupCall, timestamp: datetime
) -> Contact:
    """Set the contact's `group` attribute: the same group merges its traits, another replaces."""
    contact = await contacts_repo.writable_contact(session, contact_id, timestamp, seen=True)
    attributes = dict(contact.attributes or {})
    current = attributes.get(GROUP_ATTRIBUTE)
    kept = current if isinstance(current, dict) and current.get("id") == call.group_id else {}
    attributes[GROUP_ATTRIBUTE] = {**kept, **_json_ready(call.traits), "id": call.group_id}
    contact.attributes = attributes
    contact.updated_at = timestamp
    await session.flush()
    return contact


_PLAIN_CALLS = frozenset({TrackCall, PageCall, ScreenCall})
"""Calls stored as an event plus a sighting of the contact, nothing else: a batch stores runs of
them set-based (`Ingest._store_plain`); identify, group and alias merge into the contact and go
one at a time."""


def _page_stored(call: Any) -> tuple[str, str, dict[str, Any]]:
    return "page", PAGE_EVENT, call.page_properties()


def _screen_stored(call: Any) -> tuple[str, str, dict[str, Any]]:
    return "screen", SCREEN_EVENT, call.page_properties()


_STORED_AS: dict[type, Callable[[Any], tuple[str, str, dict[str, Any]]]] = {
    TrackCall: lambda call: ("track", call.event, call.properties),
    IdentifyCall: lambda call: ("identify", IDENTIFY_EVENT, call.traits),
    PageCall: _page_stored,
    ScreenCall: _screen_stored,
    GroupCall: lambda call: ("group", GROUP_EVENT,
                             {"groupId": call.group_id, "traits": call.traits}),
}
"""How each call type is stored: the event's `type`, its name and its properties."""


def _json_ready(properties: dict[str, Any]) -> dict[str, Any]:
    """Properties as a JSON column holds them: Python callers may pass dates, decimals, UUIDs."""
    dumped: dict[str, Any] = _PROPERTIES.dump_python(properties, mode="json")
    return dumped


_PROPERTIES: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
