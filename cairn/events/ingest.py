"""Ingest: store Segment calls once, update the contact, then hand the stored events to the router.

The order is the contract: an event is committed (with its contact) before anyone is told it was
accepted, and only then routed. Routing can fail (Temporal down, a network blip) without losing
anything: the event stays in the store with `routed_at` NULL, and routing it again later is safe.
A repeated `messageId` is acknowledged as a duplicate and neither stored nor routed a second time.

This module does not parse HTTP (that is `starter.api.ingest`) and does not decide which journeys an
event concerns (that is `cairn.events.router`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

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
from cairn.events.geofencing import Geofencing
from cairn.events.profile_rules import ProfileRules
from cairn.events.router import RouteDecision, Router
from cairn.log import get_logger
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import identity
from cairn.store import rejected as rejected_repo
from cairn.store.db import Store
from cairn.store.schema import Event

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


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    `location_updated` events) see every event just before it is routed. `attribute_changes`
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
    ) -> None:
        self.store = store
        self.router = router
        self.clock = clock
        self.profile_rules = profile_rules
        self.geofencing = geofencing
        self.attribute_changes = attribute_changes

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
        """Route stored events in order and mark each routed; never raises for routing failures.

        Stops at the first failure, so a contact's later events never overtake an earlier one
        that could not be routed; the ones left keep `routed_at` NULL. Returns the decisions of
        the events that were routed.
        """
        done: dict[int, list[RouteDecision]] = {}
        queue = list(event_ids)
        for event_id in queue:  # grows with the events the profile rules store
            async with self.store.session() as session:
                row = await session.get(Event, event_id)
            if row is None or row.routed_at is not None:
                continue
            message = events_repo.event_message(row)
            bound = log.bind(message_id=message.message_id, contact=message.contact_id,
                             event_name=message.event)
            # --- profile rules (segments and scoring): after the commit, before routing, so
            # journeys see the new scores and memberships; it is idempotent per message, so a
            # retry (or the relay) applying it again changes nothing.
            if self.profile_rules is not None:
                try:
                    queue.extend(await self.profile_rules.apply(message))
                except Exception as error:  # the event stays unrouted and is applied later
                    bound.warning("profile_rules.deferred", error=str(error),
                                  error_type=type(error).__name__)
                    break
            # --- end of profile rules
            # --- geofence hook: a location_updated event stores geofence_entered/exited events
            # for the fences crossed; they join the queue (and then pass the profile rules).
            if self.geofencing is not None:
                try:
                    queue.extend(await self.geofencing.apply(message))
                except Exception as error:  # the event stays unrouted and is applied later
                    bound.warning("geofence.deferred", error=str(error),
                                  error_type=type(error).__name__)
                    break
            # --- end of geofence hook
            if self.router is None:
                continue
            try:
                decisions = await self.router.route(message)
            except Exception as error:  # any failure leaves the event for a later attempt
                bound.warning("route.deferred", error=str(error), error_type=type(error).__name__,
                              left_unrouted=len(queue) - len(done))
                break
            async with self.store.session() as session, session.begin():
                await events_repo.mark_routed(session, [event_id], self.clock())
            done[event_id] = decisions
        return done

    # ------------------------------------------------------------------ storing

    async def _ingest(
        self,
        calls: list[SegmentCallType],
        *,
        route: bool,
        refused: Sequence[rejected_repo.Refusal] = (),
        endpoint: str = "",
    ) -> list[IngestResult]:
        received_at = self.clock()
        results: list[IngestResult] = []
        async with self.store.session() as session, session.begin():
            for call in calls:
                results.append(await self._store(session, call, received_at))
            if refused:
                await rejected_repo.record_refusals(session, refused, endpoint=endpoint,
                                                    received_at=received_at)
        own = [r.event_id for r in results if not r.duplicate]
        fresh = [i for r in results if not r.duplicate for i in (r.event_id, *r.derived)]
        if route and fresh:
            routed = await self.route_events(fresh)
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
                await _join_group(session, contact_id, call, timestamp)
            else:
                await contacts_repo.ensure_contact(session, contact_id, timestamp)
        log.info("ingest.stored" if new else "ingest.duplicate", type=kind, event_name=name,
                 message_id=call.message_id, contact=contact_id, event_id=row.id)
        return IngestResult(message_id=call.message_id, event_id=row.id, duplicate=not new,
                            derived=derived)


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
) -> None:
    """Set the contact's `group` attribute: the same group merges its traits, another replaces."""
    contact = await contacts_repo.writable_contact(session, contact_id, timestamp, seen=True)
    attributes = dict(contact.attributes or {})
    current = attributes.get(GROUP_ATTRIBUTE)
    kept = current if isinstance(current, dict) and current.get("id") == call.group_id else {}
    attributes[GROUP_ATTRIBUTE] = {**kept, **_json_ready(call.traits), "id": call.group_id}
    contact.attributes = attributes
    contact.updated_at = timestamp
    await session.flush()


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
