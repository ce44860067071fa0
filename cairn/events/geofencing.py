"""Geofencing: a contact's `location_updated` events become `geofence_entered` / `geofence_exited`.

Ingest calls `Geofencing.apply` for every stored event before routing it (beside the audience
hook). For a `location_updated` track event (`properties.latitude`, `properties.longitude`) it
compares the fences containing the new position with the fences the contact was inside at its
previous known position, and stores one event per fence crossed for the same contact:
`geofence_entered` / `geofence_exited` with `{fence}`. Ingest routes them like any other event,
so `trigger: {geofence_entered: store-12}` starts a journey.

The previous position is kept on the contact, in the attribute `_location`
(`{latitude, longitude, at, fences, message_id}`); the leading underscore marks it as Cairn's own
bookkeeping. A contact's first known position counts as walking in: if it is inside a fence, that
fence is entered. A position older than the one kept (events arriving out of order) is ignored, so a
late event never walks the contact back. Derived message ids are `<source id>/<event>/<fence>`,
so handling the same source event again stores nothing new.

Fence definitions are `cairn.geofences`, read by `cairn.catalog_folder`; deciding journeys is the
router's job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cairn.catalog_folder import load_geofences
from cairn.geofences import Geofence, fences_containing
from cairn.journey_run import EventMessage
from cairn.log import get_logger
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store.db import Store

log = get_logger(__name__)

LOCATION_UPDATED = "location_updated"
"""The track event a mobile app sends with the device's position."""

GEOFENCE_ENTERED = "geofence_entered"
GEOFENCE_EXITED = "geofence_exited"

LOCATION_ATTRIBUTE = "_location"
"""The contact attribute holding the last known position and the fences it was inside."""

GEOFENCE_EVENT_TYPE = "geofence"
"""The `type` of the events this module stores (beside track, identify, audience)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Geofencing:
    """Fence crossings from location events, one contact at a time."""

    def __init__(
        self,
        store: Store,
        fences: list[Geofence],
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.fences = fences
        self.clock = clock

    @classmethod
    def from_folder(cls, store: Store, folder: Path, **options: Any) -> Geofencing:
        """Fences from `geofences/` in a journeys folder (absent: no fences, nothing emitted).

        Raises `GeofenceFileError` naming every file and field to fix.
        """
        return cls(store, load_geofences(Path(folder)), **options)

    async def apply(self, event: EventMessage) -> list[int]:
        """Store the crossings a location event makes; returns the ids of the events it stored.

        Safe to call again for the same event: the kept position already is this one, so
        nothing is crossed and nothing stored twice.
        """
        if event.event != LOCATION_UPDATED or not self.fences:
            return []
        bound = log.bind(contact=event.contact_id, message_id=event.message_id)
        position = _position(event.properties)
        if position is None:
            bound.warning("geofence.bad_location", properties=sorted(event.properties),
                          hint="location_updated needs numeric properties latitude (-90..90) "
                               "and longitude (-180..180)")
            return []
        latitude, longitude = position
        known = {fence.key for fence in self.fences}
        stored: list[int] = []
        async with self.store.session() as s, s.begin():
            contact = await contacts_repo.get_contact(s, event.contact_id)
            kept = (contact.attributes or {}).get(LOCATION_ATTRIBUTE) if contact else None
            kept = kept if isinstance(kept, dict) else {}
            if kept.get("message_id") == event.message_id:
                return []  # handled already
            kept_at = _moment(kept.get("at"))
            if kept_at is not None and event.timestamp < kept_at:
                bound.info("geofence.stale_location", kept_at=kept.get("at"))
                return []
            before = {str(k) for k in kept.get("fences") or [] if str(k) in known}
            now_inside = set(fences_containing(self.fences, latitude, longitude))
            crossings = [(GEOFENCE_EXITED, key) for key in sorted(before - now_inside)]
            crossings += [(GEOFENCE_ENTERED, key) for key in sorted(now_inside - before)]
            await contacts_repo.apply_profile_update(
                s, event.contact_id,
                {LOCATION_ATTRIBUTE: {
                    "latitude": latitude, "longitude": longitude,
                    "at": event.timestamp.astimezone(UTC).isoformat(),
                    "fences": sorted(now_inside), "message_id": event.message_id,
                }},
                [], [], [], event.timestamp,
            )
            for name, fence in crossings:
                row, new = await events_repo.record_event(
                    s, message_id=f"{event.message_id}/{name}/{fence}", type=GEOFENCE_EVENT_TYPE,
                    contact_id=event.contact_id, name=name, properties={"fence": fence},
                    timestamp=event.timestamp, received_at=self.clock(),
                )
                if new:
                    stored.append(row.id)
                    bound.info("geofence.crossed", crossing=name, fence=fence)
        return stored


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _position(properties: dict[str, Any]) -> tuple[float, float] | None:
    latitude, longitude = _number(properties.get("latitude")), _number(properties.get("longitude"))
    if latitude is None or longitude is None:
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    return latitude, longitude


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


__all__ = [
    "GEOFENCE_ENTERED",
    "GEOFENCE_EXITED",
    "LOCATION_ATTRIBUTE",
    "LOCATION_UPDATED",
    "Geofencing",
]
