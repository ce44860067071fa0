"""What a looping run carries across continue-as-new stays small: the last PATH_LIMIT path
entries one by one, the earlier ones summarised per step (how often, first and last time).

A daily loop plays 200 days on the time-skipping server (400 path entries); every
continue-as-new input of its history is measured.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import yaml
from temporalio.api.history.v1 import HistoryEvent

from cairn.journey import Journey
from cairn.journey_run import PathEntry, StepSummary, summarise
from starter.testing import Simulator, parse_scenario
from workflows.run import PATH_LIMIT

DAILY_LOOP = """
key: daily-loop
name: Daily loop
trigger: {event: go}
steps:
  day: {wait: 1d, next: mark}
  mark: {score: {add: 1, dimension: daily}, next: day}
"""

CARRIED_BYTES_LIMIT = 30 * 1024


def carried(event: HistoryEvent) -> tuple[int, dict]:
    """Bytes of a continue-as-new input, and the state it hands over."""
    payloads = event.workflow_execution_continued_as_new_event_attributes.input.payloads
    size = sum(payload.ByteSize() for payload in payloads)
    return size, json.loads(payloads[0].data)["state"]


async def test_a_daily_loop_carries_under_30_kb_with_the_older_path_summarised(
    simulator: Simulator,
) -> None:
    scenario = parse_scenario({
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "c-loop", "timezone": "UTC"},
        "events": [{"at": "+0s", "event": "go"}],
        "until": "+200d",
    })
    report = await simulator.run(Journey.model_validate(yaml.safe_load(DAILY_LOOP)), scenario,
                                 keep_histories=True)

    [runs] = report.histories.values()
    handed_over = [carried(run.events[-1]) for run in runs if run.events[-1].HasField(
        "workflow_execution_continued_as_new_event_attributes")]
    assert len(handed_over) >= 199
    largest = max(size for size, _ in handed_over)
    assert largest < CARRIED_BYTES_LIMIT, f"a run carried {largest} bytes"

    _, state = handed_over[-1]
    assert len(state["path"]) == PATH_LIMIT
    summary = {item["step"]: item for item in state["earlier"]}
    assert set(summary) == {"day", "mark"}
    assert state["path_dropped"] == summary["day"]["count"] + summary["mark"]["count"]
    assert state["path_dropped"] + len(state["path"]) >= 398  # every step taken is accounted for
    assert summary["day"]["first_at"].startswith("2026-03-02T09:00:00")
    assert summary["day"]["last_at"] < state["path"][0]["at"]


def test_summarise_folds_entries_into_counts_and_first_and_last_times() -> None:
    def at(day: int) -> datetime:
        return datetime(2026, 3, day, 9, tzinfo=UTC)

    earlier = [StepSummary("day", 2, at(1), at(2))]
    entries = [PathEntry("mark", at(2), "scored"), PathEntry("day", at(3), ""),
               PathEntry("mark", at(3), "scored")]

    folded = summarise(earlier, entries)

    assert folded == [StepSummary("day", 3, at(1), at(3)), StepSummary("mark", 2, at(2), at(3))]
    assert earlier == [StepSummary("day", 2, at(1), at(2))], "the summary given is not changed"
