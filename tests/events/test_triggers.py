"""Every trigger kind is an event underneath: the right one starts the journey, others do not."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cairn.journey import Journey, Trigger
from starter.testing import Simulator, parse_scenario

STEPS = {"mark": {"score": {"add": 1}, "next": "end"}}


def journey(trigger: dict[str, Any]) -> Journey:
    return Journey.model_validate(
        {"key": "trigger-test", "name": "Trigger test", "trigger": trigger, "steps": STEPS}
    )


async def outcome(sim: Simulator, trigger: dict[str, Any], event: dict[str, Any]) -> str:
    scenario = parse_scenario(
        {"now": "2026-03-02T09:00:00Z", "contact": {"id": "c-1"},
         "events": [{"at": "+0s", **event}], "until": "+1h"}
    )
    report = await sim.run(journey(trigger), scenario)
    return report.outcome


@pytest.mark.parametrize(
    ("trigger", "event", "expected"),
    [
        ({"segment_entered": "buyers"},
         {"event": "segment_entered", "properties": {"segment": "buyers"}}, "completed"),
        ({"segment_entered": "buyers"},
         {"event": "segment_entered", "properties": {"segment": "vip"}}, "not_entered"),
        ({"segment_exited": "buyers"},
         {"event": "segment_exited", "properties": {"segment": "buyers"}}, "completed"),
        ({"attribute_changed": "plan", "to": "pro"},
         {"event": "attribute_changed",
          "properties": {"attribute": "plan", "from": "trial", "to": "pro"}}, "completed"),
        ({"attribute_changed": "plan", "to": "pro"},
         {"event": "attribute_changed",
          "properties": {"attribute": "plan", "from": "pro", "to": "trial"}}, "not_entered"),
        ({"geofence_entered": "store-12"},
         {"event": "geofence_entered", "properties": {"fence": "store-12"}}, "completed"),
        ({"api": True},
         {"event": "journey_entry_requested", "properties": {"journey": "trigger-test"}},
         "completed"),
        ({"api": True},
         {"event": "journey_entry_requested", "properties": {"journey": "other"}},
         "not_entered"),
    ],
)
async def test_trigger_kinds(
    simulator: Simulator, trigger: dict[str, Any], event: dict[str, Any], expected: str
) -> None:
    assert await outcome(simulator, trigger, event) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "exactly one of"),
        ({"event": "a", "segment_entered": "b"}, "found: event, segment_entered"),
        ({"event": "a", "to": "pro"}, "only apply to attribute_changed"),
        ({"date_attribute": {"attribute": "birthday", "time": "25:00"}}, "24-hour"),
    ],
)
def test_bad_triggers_are_explained(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Trigger.model_validate(data)


def test_trigger_round_trips_as_written() -> None:
    written = {"attribute_changed": "plan", "from": "trial", "to": "pro"}
    assert Trigger.model_validate(written).model_dump(mode="json") == written
