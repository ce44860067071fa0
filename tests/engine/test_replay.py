"""Replay tests: histories recorded from simulations must replay on today's interpreter.

A change to the workflow code that would make running journeys fail (a step that issues different
commands for the same history) fails here. The histories are made by `tests/histories/record.py`;
together they must visit every step kind and include a continue-as-new.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from cairn.journey import STEP_KINDS, step_kind
from cairn.journey_run import JourneyInput
from starter.worker import workflow_runner
from workflows import WORKFLOWS

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
FILES = sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay/{path.stem}", path.read_text(encoding="utf-8"))


def journey_input(history: WorkflowHistory) -> JourneyInput:
    started = history.events[0].workflow_execution_started_event_attributes
    (data,) = pydantic_data_converter.payload_converter.from_payloads(
        list(started.input.payloads), [JourneyInput]
    )
    assert isinstance(data, JourneyInput)
    return data


def steps_begun(history: WorkflowHistory) -> list[str]:
    """Step names in the order the run began them (the CairnStep search attribute it upserts)."""
    names = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            continue
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        payload = fields.indexed_fields.get("CairnStep")
        if payload is not None:
            names.append(json.loads(payload.data))
    return names


def test_there_are_histories() -> None:
    assert len(FILES) >= 7, "run `python tests/histories/record.py` to record them"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def test_histories_cover_every_step_kind_and_a_continue_as_new() -> None:
    kinds: set[str] = set()
    continued = False
    for path in FILES:
        history = load(path)
        journey = journey_input(history).journey
        for name in steps_begun(history):
            if name in journey.steps:
                kind = step_kind(journey.steps[name])
                assert kind is not None
                kinds.add(kind)
        continued = continued or any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            for e in history.events
        )
    assert kinds == set(STEP_KINDS), f"never visited: {sorted(set(STEP_KINDS) - kinds)}"
    assert continued, "no history continues as new (the loop recording is missing)"


def test_histories_stay_small() -> None:
    for path in FILES:
        assert path.stat().st_size < 200_000, f"{path.name} is large; shorten its scenario"
