"""Branching steps: `if` decides on fresh data read by an activity; `split` decides by hashing.

A split must send the same contact down the same path on every replay and every re-entry, so it
hashes (journey, step, contact) instead of drawing a random number (`cairn.arms`).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cairn.arms import bucket, goal_events, split_arm
    from cairn.conditions import caught_events
    from cairn.contracts import (
        CHOOSE_ARM,
        EVALUATE_CONDITION,
        ArmChoice,
        ArmRequest,
        ConditionRequest,
        VerdictResult,
    )
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


async def split(step: SplitStep, run: JourneyRun) -> Next:
    """Send the contact down one path by its bucket; the holdout ends the journey, counted.

    A split with an `experiment:` records the arm through `choose_arm` (a local activity in lean
    runs), which gives the decided winner instead once an automatic experiment has one; splits
    without one call no activity, as before.
    """
    spec = step.split
    point = bucket(run.journey.key, run.step, run.input.contact_id)
    arm, index = split_arm(spec, point)
    how = f"bucket {point:.2f}"
    if spec.experiment is not None:
        choice: ArmChoice = await run.act(
            CHOOSE_ARM,
            ArmRequest(context=run.context(), split=spec, hashed=arm,
                       goal_events=list(goal_events(run.journey, spec.experiment))),
            ArmChoice,
            step.summary or f"arm at {run.step}",
            local=run.lean,
        )
        if choice.arm != arm:
            arm = choice.arm
            index = next(i for i in range(len(spec.paths)) if spec.path_name(i) == arm)
        how = f"{how}, {choice.reason}"
    if index is None:
        run.note(f"holdout ({how} < {spec.holdout:g}%)")
        return Next(outcome="ended:holdout", via="holdout")
    run.note(f"{arm} ({spec.paths[index].percent:g}%, {how})")
    return Next.to(spec.paths[index].next, via=f"paths[{index}]")
