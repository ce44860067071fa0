"""The arm of a split's experiment: recorded per run, or the decided winner for new entrants.

`choose_arm` is the one activity a split with an `experiment:` calls (a local activity in lean
runs): it records the arm the contact's bucket gave (`experiment_assignments`, once per visit of
the step), unless an automatic experiment has a winner, then it records and returns the winner.
Before answering it sees whether the figures now decide one (`cairn.experiments.take_decision`).
A split's holdout stays held out: the winner is measured against it.

Sends with variants need none of this: `deliver_message` chooses and records their variant.
"""

from __future__ import annotations

from sqlalchemy import select
from temporalio import activity

from activities.context import record_transitions, step_log
from cairn import experiments
from cairn.contracts import CHOOSE_ARM, ArmChoice, ArmRequest
from cairn.journey import HOLDOUT_ARM, SplitStep
from cairn.store.db import Store
from cairn.store.schema import ExperimentAssignment


class ExperimentActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name=CHOOSE_ARM)
    async def choose_arm(self, request: ArmRequest) -> ArmChoice:
        context = request.context
        key = context.idempotency_key
        step = SplitStep.model_validate({"split": request.split})
        assert request.split.experiment is not None
        site = experiments.Site(context.journey_key, context.journey_version, context.step, step,
                                request.split.experiment, tuple(request.goal_events))
        async with self.store.session() as s, s.begin():
            # the run hands this activity its buffered step transitions, as every writing one
            await record_transitions(s, context)
            recorded = (await s.execute(select(ExperimentAssignment).where(
                ExperimentAssignment.idempotency_key == key))).scalar()
            if recorded is not None:
                return ArmChoice(arm=recorded.arm, reason="arm already recorded")
            decided = await experiments.take_decision(s, site, context.now)
            arm, reason = request.hashed, "by bucket"
            if decided is not None and request.hashed != HOLDOUT_ARM \
                    and decided.winner in request.split.arm_names():
                arm = decided.winner
                reason = f"winner since {decided.decided_at.isoformat()}"
            s.add(ExperimentAssignment(
                idempotency_key=key, journey_key=context.journey_key,
                journey_version=context.journey_version, step=context.step,
                workflow_id=context.workflow_id, contact_id=context.contact_id, arm=arm,
                assigned_at=context.now))
        step_log(context).info("experiment.arm", arm=arm, reason=reason)
        return ArmChoice(arm=arm, reason=reason)
