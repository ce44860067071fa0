"""Branching steps: `if` decides on fresh data read by an activity; `split` decides by hashing.

A split must send the same contact down the same path on every replay and every re-entry, so it
hashes (journey, step, contact) instead of drawing a random number.
"""

from __future__ import annotations

import hashlib
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cairn.conditions import caught_events
    from cairn.contracts import EVALUATE_CONDITION, ConditionRequest, VerdictResult
    from cairn.journey import IfStep, SplitStep

from workflows.run import JourneyRun, Next
from workflows.steps.waiting import CAUGHT_KEY


async def if_(step: IfStep, run: JourneyRun) -> Next:
    """Evaluate a condition against a fresh contact snapshot and the store's event history.

    Events caught by earlier `wait_for_event` steps live only in the run's state, so the ones the
    condition reads travel in the request (none for conditions that read none).
    """
    verdict: VerdictResult = await run.act(
        EVALUATE_CONDITION,
        ConditionRequest(
            # a read: a write (and its commit) here would cost more than the decision
            context=run.context(transitions=False),
            condition=step.if_,
            trigger=run.state.trigger,
            entered_at=run.state.entered_at,
            caught_events=_caught(step, run),
        ),
        VerdictResult,
        step.summary or f"decide {run.step}",
        local=run.lean,  # a read: no queue, no history events of its own
    )
    branch, target = ("then", step.then) if verdict.result else ("else", step.else_)
    run.note(f"{branch}: {verdict.reason}")
    return Next.to(target, via=branch)


def _caught(step: IfStep, run: JourneyRun) -> dict[str, dict[str, Any]]:
    """The caught events the condition names, as `wait_for_event` kept them in the context."""
    kept = run.state.context.get(CAUGHT_KEY)
    if not isinstance(kept, dict):
        return {}
    return {name: kept[name] for name in caught_events(step.if_)
            if isinstance(kept.get(name), dict)}


def bucket(journey_key: str, step: str, contact_id: str) -> float:
    """A stable number in [0, 100) for a contact at a split."""
    digest = hashlib.sha256(f"{journey_key}/{step}/{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 / 10_000


async def split(step: SplitStep, run: JourneyRun) -> Next:
    """Send the contact down one path by its bucket; the holdout ends the journey, counted."""
    spec = step.split
    point = bucket(run.journey.key, run.step, run.input.contact_id)
    if point < spec.holdout:
        run.note(f"holdout (bucket {point:.2f} < {spec.holdout:g}%)")
        return Next(outcome="ended:holdout", via="holdout")
    edge = spec.holdout
    for index, path in enumerate(spec.paths):
        edge += path.percent
        if point < edge or index == len(spec.paths) - 1:
            label = path.name or f"path {index + 1}"
            run.note(f"{label} ({path.percent:g}%, bucket {point:.2f})")
            return Next.to(path.next, via=f"paths[{index}]")
    raise AssertionError("split paths add up to 100")
