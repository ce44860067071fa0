"""Geofences: named circles on the map, kept in `geofences/*.yaml` beside the journeys.

A geofence file holds one fence:

```yaml
key: store-12
name: Store 12, Bucharest Victoriei
latitude: 44.4479
longitude: 26.0979
radius_m: 150
```

This module parses and validates fences and answers which fences contain a position (great-circle
distance, haversine); it does no I/O. Reading the files is `cairn.catalog_folder`; turning a
contact's `location_updated` events into `geofence_entered` / `geofence_exited` events is
`cairn.events.geofencing`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pydantic import Field, ValidationError

from cairn.conditions import Spec
from cairn.problems import DefinitionFileError, Problem, model_problems

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), in metres; the haversine error it brings is well under 0.5%."""

FENCE_KEY = r"^[a-z0-9][a-z0-9_-]{0,127}$"


class GeofenceFileError(DefinitionFileError):
    """Geofence files that cannot be used; `.problems` lists every fix, with file and field."""

    holds = "geofence definitions"


class Geofence(Spec):
    """A circle: centre in decimal degrees (WGS 84) and a radius in metres."""

    key: str = Field(pattern=FENCE_KEY, description="stable identity, named by triggers")
    name: str | None = None
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    radius_m: float = Field(gt=0, le=1_000_000, description="radius in metres")

    def contains(self, latitude: float, longitude: float) -> bool:
        """Whether a position is inside the fence (the boundary counts as inside)."""
        return distance_m(self.latitude, self.longitude, latitude, longitude) <= self.radius_m


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two positions (haversine formula)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def fences_containing(fences: Iterable[Geofence], latitude: float, longitude: float) -> list[str]:
    """Keys of the fences a position is inside, in key order."""
    return sorted(f.key for f in fences if f.contains(latitude, longitude))


def parse_geofence(file: str, data: Any) -> tuple[Geofence | None, list[Problem]]:
    """One fence from a file's content, or the problems (with file and field) that stop it."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return None, [Problem(file, "", "a geofence file holds one mapping (key, name, latitude, "
                                        f"longitude, radius_m); this one is {kind}")]
    try:
        return Geofence.model_validate(data), []
    except ValidationError as error:
        return None, model_problems(file, error, data)


__all__ = [
    "Geofence",
    "GeofenceFileError",
    "distance_m",
    "fences_containing",
    "parse_geofence",
]
