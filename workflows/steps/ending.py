"""The `end` step: finish, with `completed` or the author's outcome."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cairn.journey import EndStep

from workflows.run import JourneyRun, Next


async def end(step: EndStep, run: JourneyRun) -> Next:
    outcome = f"ended:{step.end.outcome}" if step.end.outcome else "completed"
    run.note(outcome)
    return Next(outcome=outcome)
