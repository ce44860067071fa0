"""Lead scoring from journeys: a `score` step adds to one dimension, with a reason in history."""

from __future__ import annotations

from temporalio import activity

from activities.context import record_transitions, step_log
from cairn.contracts import CHANGE_SCORE, ScoreRequest, ScoreResult
from cairn.store import scores as scores_repo
from cairn.store.db import Store


class ScoreActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name=CHANGE_SCORE)
    async def change_score(self, request: ScoreRequest) -> ScoreResult:
        """Add the step's points once per step visit (a retry answers the recorded total)."""
        context, change = request.context, request.change
        async with self.store.session() as s, s.begin():
            await record_transitions(s, context)
            total = await scores_repo.change_score(
                s,
                contact_id=context.contact_id,
                dimension=change.dimension,
                delta=change.add,
                reason=change.reason or f"journey {context.journey_key} step {context.step}",
                source=context.workflow_id,
                workflow_id=context.workflow_id,
                idempotency_key=context.idempotency_key,
                now=context.now,
            )
        step_log(context).info("score.changed", dimension=change.dimension, add=change.add,
                               total=total)
        return ScoreResult(dimension=change.dimension, total=total)
