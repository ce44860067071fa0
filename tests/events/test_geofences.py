"""Geofences: YAML definitions, distances, and location events becoming enter/exit events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from cairn.catalog_folder import load_geofences
from cairn.events.calls import TrackCall
from cairn.events.geofencing import Geofencing
from cairn.events.ingest import Ingest
from cairn.geofences import GeofenceFileError, distance_m, fences_containing
from cairn.journey import Journey
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from starter.testing import Simulator, parse_scenario
from tests.engine_support import (
    MARK_AND_END,
    T0,
    engine,
    entries_of,
    events_named,
    finished,
    publish,
    unique,
)

STORE_12 = (44.4479, 26.0979)
"""A shop in central Bucharest; the fence around it has a 150 m radius."""

NEAR = (44.4485, 26.0985)     # about 80 m from the shop: inside
FAR = (44.4600, 26.0979)      # about 1.3 km north: outside


def write_fences(folder: Path) -> Path:
    fences = folder / "geofences"
    fences.mkdir(parents=True, exist_ok=True)
    (fences / "store-12.yaml").write_text(
        "key: store-12\nname: Store 12\nlatitude: 44.4479\nlongitude: 26.0979\nradius_m: 150\n")
    (fences / "airport.yaml").write_text(
        "key: airport\nlatitude: 44.5711\nlongitude: 26.0850\nradius_m: 2000\n")
    return folder


def test_distances_follow_the_great_circle() -> None:
    paris, london = (48.8566, 2.3522), (51.5074, -0.1278)
    assert distance_m(*paris, *london) == pytest.approx(343_500, rel=0.005)
    assert 60 < distance_m(*STORE_12, *NEAR) < 100
    assert distance_m(*STORE_12, *STORE_12) == 0


def test_fences_load_from_yaml_and_contain_positions(tmp_path: Path) -> None:
    fences = load_geofences(write_fences(tmp_path))
    assert [f.key for f in fences] == ["airport", "store-12"]
    assert fences_containing(fences, *NEAR) == ["store-12"]
    assert fences_containing(fences, *FAR) == []
    assert load_geofences(tmp_path / "missing") == []


def test_bad_fence_files_are_explained_with_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "geofences"
    folder.mkdir()
    (folder / "a.yaml").write_text("key: shop\nlatitude: 95\nlongitude: 26\nradius_m: 10\n")
    (folder / "b.yaml").write_text("key: shop\nlatitude: 44\nlongitude: 26\n")
    (folder / "c.yaml").write_text("key: ok\nlatitude: 44\nlongitude: 26\nradius_m: 5\n")
    (folder / "d.yaml").write_text("key: ok\nlatitude: 1\nlongitude: 2\nradius_m: 5\n")
    with pytest.raises(GeofenceFileError) as raised:
        load_geofences(tmp_path)
    text = str(raised.value)
    assert f"{folder / 'a.yaml'}: latitude:" in text and "less than or equal to 90" in text
    assert f"{folder / 'b.yaml'}" in text and "radius_m" in text
    assert f"{folder / 'd.yaml'}: key: geofence 'ok' is also defined in" in text


async def locate(ingest: Ingest, contact: str, position: tuple[float, float], minutes: int,
                 message_id: str | None = None) -> list[str]:
    """Send a location event; the names of the geofence events it stored."""
    call = TrackCall(user_id=contact, event="location_updated",
                     properties={"latitude": position[0], "longitude": position[1]},
                     timestamp=T0 + timedelta(minutes=minutes),
                     **({"message_id": message_id} if message_id else {}))
    before = {e.id for e in await events_named(ingest.store, "geofence_entered", contact)}
    before |= {e.id for e in await events_named(ingest.store, "geofence_exited", contact)}
    await ingest.track(call)
    after = [*await events_named(ingest.store, "geofence_entered", contact),
             *await events_named(ingest.store, "geofence_exited", contact)]
    return [f"{e.name}:{e.properties['fence']}" for e in sorted(after, key=lambda e: e.id)
            if e.id not in before]


async def test_walking_in_and_out_emits_one_event_each(store: Store, tmp_path: Path) -> None:
    ingest = Ingest(store, None, geofencing=Geofencing.from_folder(store, write_fences(tmp_path)))
    assert await locate(ingest, "c-1", FAR, 0) == []
    assert await locate(ingest, "c-1", NEAR, 5, "walk-in") == ["geofence_entered:store-12"]
    assert await locate(ingest, "c-1", STORE_12, 6) == []          # still inside: nothing
    assert await locate(ingest, "c-1", NEAR, 5, "walk-in") == []    # same message: nothing
    assert await locate(ingest, "c-1", FAR, 3) == []                # older than known: ignored
    assert await locate(ingest, "c-1", FAR, 20) == ["geofence_exited:store-12"]
    assert await locate(ingest, "c-1", FAR, 21) == []
    async with store.session() as session:
        contact = await contacts_repo.get_contact(session, "c-1")
    assert contact is not None
    kept = contact.attributes["_location"]
    assert (kept["latitude"], kept["longitude"], kept["fences"]) == (*FAR, [])


async def test_a_first_position_inside_counts_as_entering(store: Store, tmp_path: Path) -> None:
    ingest = Ingest(store, None, geofencing=Geofencing.from_folder(store, write_fences(tmp_path)))
    assert await locate(ingest, "c-2", NEAR, 0) == ["geofence_entered:store-12"]
    bad = TrackCall(user_id="c-2", event="location_updated", properties={"latitude": "north"})
    await ingest.track(bad)  # stored, logged, crosses nothing
    assert len(await events_named(store, "geofence_exited", "c-2")) == 0


async def test_entering_a_fence_starts_a_geofence_journey(
    temporal_env: WorkflowEnvironment, store: Store, tmp_path: Path
) -> None:
    entered, left = unique("at-store"), unique("left-store")
    await publish(store, {"key": entered, "name": "Welcome to the store",
                          "trigger": {"geofence_entered": "store-12"}, "steps": MARK_AND_END})
    await publish(store, {"key": left, "name": "Thanks for visiting",
                          "trigger": {"geofence_exited": "store-12"}, "steps": MARK_AND_END})
    await publish(store, {"key": unique("airport"), "name": "At the airport",
                          "trigger": {"geofence_entered": "airport"}, "steps": MARK_AND_END})
    geofencing = Geofencing.from_folder(store, write_fences(tmp_path))
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, geofencing=geofencing)
        walk_in = await ingest.track(TrackCall(
            user_id="c-3", event="location_updated", timestamp=T0,
            properties={"latitude": NEAR[0], "longitude": NEAR[1]}))
        assert [(d.journey, d.action) for d in walk_in.routes] == [(entered, "started")]
        [entry] = await entries_of(store, entered)
        assert (await finished(temporal_env, entry.workflow_id)).outcome == "completed"
        assert await entries_of(store, left) == []
        walk_out = await ingest.track(TrackCall(
            user_id="c-3", event="location_updated", timestamp=T0 + timedelta(hours=1),
            properties={"latitude": FAR[0], "longitude": FAR[1]}))
        assert [(d.journey, d.action) for d in walk_out.routes] == [(left, "started")]
        [exit_entry] = await entries_of(store, left)
        assert (await finished(temporal_env, exit_entry.workflow_id)).outcome == "completed"
        assert len(await entries_of(store, entered)) == 1


async def test_a_geofence_journey_can_be_simulated(tmp_path: Path) -> None:
    journey = Journey.model_validate({
        "key": "store-welcome", "name": "Welcome to the store",
        "trigger": {"geofence_entered": "store-12"}, "steps": MARK_AND_END})
    scenario = parse_scenario({
        "now": "2026-03-02T09:00:00Z", "contact": {"id": "c-9"}, "until": "+1h",
        "events": [
            {"at": "+0s", "event": "location_updated",
             "properties": {"latitude": FAR[0], "longitude": FAR[1]}},
            {"at": "+10m", "event": "location_updated",
             "properties": {"latitude": NEAR[0], "longitude": NEAR[1]}},
        ]})
    # A server of the simulation's own: runs the router tests above ended can stall a clock.
    async with Simulator.start() as sim:
        report = await sim.run(journey, scenario, audience_folder=write_fences(tmp_path))
        assert report.outcome == "completed"
        assert report.path[0].at == T0 + timedelta(minutes=10)
        no_fences = await sim.run(journey, scenario, audience_folder=tmp_path / "elsewhere")
        assert no_fences.outcome == "not_entered"
