"""Temporal Cloud billable actions per workflow run, counted from saved histories.

Reads workflow histories saved as JSON (`WorkflowHistory.to_json`, as the Temporal UI and
`temporal workflow show --output json` write them, and as `tests/histories/` keeps them) and
counts, per history, the events Temporal Cloud bills as actions
(https://docs.temporal.io/cloud/actions): workflow started (a continue-as-new starts the next
run: counted on the run it starts), signals (a signal-with-start counts once in all: its signal
is not counted again), activities scheduled and each retry, timers, search-attribute upserts,
local-activity markers (one per workflow task), child workflows (two). Queries, heartbeats and
schedules are not in histories; `docs/scale.md` adds them by hand. It asserts nothing.

    python benchmarks/history_actions.py tests/histories/*.json
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

BILLED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "workflow started",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signal",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activity",
    EventType.EVENT_TYPE_TIMER_STARTED: "timer",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search-attribute upsert",
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child workflow (2)",
}


def billed_actions(history: WorkflowHistory) -> Counter[str]:
    """Billable actions of one run, by kind."""
    counts: Counter[str] = Counter()
    started_with_signal = False
    task_markers: set[int] = set()
    for index, event in enumerate(history.events):
        kind = BILLED.get(event.event_type)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attributes = event.workflow_execution_started_event_attributes
            started_with_signal = _signal_follows(history.events, index)
            if attributes.continued_execution_run_id:
                kind = "workflow started (continue-as-new)"
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED \
                and started_with_signal:
            started_with_signal = False  # the signal of a signal-with-start: counted with it
            continue
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            retries = event.activity_task_started_event_attributes.attempt - 1
            if retries > 0:
                counts["activity retry"] += retries
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity":
                task_markers.add(marker.workflow_task_completed_event_id)
        if kind is not None:
            counts[kind] += 2 if event.event_type == \
                EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED else 1
    if task_markers:
        counts["local activities (per workflow task)"] = len(task_markers)
    return counts


def _signal_follows(events: list[HistoryEvent], index: int) -> bool:
    """A signal recorded right after the start, before any workflow task: signal-with-start."""
    for event in events[index + 1:index + 3]:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            return True
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            return False
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("histories", nargs="+", type=Path)
    args = parser.parse_args()
    print(f"{'history':28} {'events':>6} {'actions':>7}  by kind")
    for path in args.histories:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        counts = billed_actions(history)
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        print(f"{path.name:28} {len(history.events):>6} {sum(counts.values()):>7}  {kinds}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
