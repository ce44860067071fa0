"""The journey interpreter: one workflow runs any journey definition for one contact.

It is a loop that looks up the handler of the current step's kind and follows the `Next` it
returns. Signals bring events (de-duplicated by message id; exit goals checked at once) and
operator exits; the `state` query shows where the contact is and how it got there. A run
continues as new at each pass of a loop and when Temporal suggests it, carrying its whole state,
so a journey can loop monthly for years with a small history per run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from cairn import search_attributes
    from cairn.contracts import FINISH_ENTRY, EntryFinish
    from cairn.journey import step_kind
    from cairn.journey_run import (
        EVENT_SIGNAL,
        EXIT_SIGNAL,
        STATE_QUERY,
        WORKFLOW_NAME,
        EventMessage,
        ExitRequest,
        HeardEvent,
        JourneyInput,
        JourneyResult,
        JourneyState,
        JourneyStateView,
        goal_key,
    )

from workflows.run import (
    ACTIVITY_RETRY,
    ACTIVITY_TIMEOUT,
    ANCHOR_SLACK,
    COMPLETED,
    HEARD_LIMIT,
    SEEN_IDS_LIMIT,
    JourneyRun,
    Next,
)
from workflows.steps import HANDLERS

REMOVED = "removed"
"""Outcome of a run ended by `cairn exit` (an operator) rather than by a goal or an `end`."""

FAILED = "failed"
"""Outcome of a run a step failed (an activity out of retries): its entry closes as failed."""

FAILED_ENTRY_PATCH = "close-entry-on-failure"
"""Runs that failed before the interpreter closed entries on failure replay without the call."""


def _entry_anchor(trigger: EventMessage | None, entered_at: datetime) -> datetime | None:
    """The trigger's time, when the journey starts within a minute of it: the journey counts
    from the event ("2 hours after the cart"), not from when routing got to it."""
    if trigger is None:
        return None
    moment = trigger.timestamp.replace(microsecond=0)
    return moment if timedelta(0) <= entered_at - moment <= ANCHOR_SLACK else None


@workflow.defn(name=WORKFLOW_NAME)
class JourneyWorkflow:
    @workflow.init
    def __init__(self, data: JourneyInput) -> None:
        entered_at = workflow.now() + timedelta(seconds=data.clock_offset_seconds)
        state = data.state or JourneyState(
            entered_at=entered_at,
            current=data.journey.first_step,
            trigger=data.trigger,
            anchor=_entry_anchor(data.trigger, entered_at),
        )
        self.run_ = JourneyRun(data, state)
        if data.trigger is not None and data.trigger.message_id not in state.seen_message_ids:
            state.seen_message_ids.append(data.trigger.message_id)

    # ------------------------------------------------------------------ signals and query

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, message: EventMessage) -> None:
        """Keep a new event for waits, and end the journey at once if it meets an exit goal."""
        state = self.run_.state
        if message.message_id in state.seen_message_ids:
            return
        state.seen_message_ids.append(message.message_id)
        del state.seen_message_ids[:-SEEN_IDS_LIMIT]
        state.heard.append(HeardEvent(seq=state.next_seq, message=message))
        state.next_seq += 1
        del state.heard[:-HEARD_LIMIT]
        if self.run_.exit_outcome is not None or state.outcome is not None:
            return
        journey = self.run_.journey
        for index, goal in enumerate(journey.exit):
            if goal.event != message.event:
                continue
            if goal.where is None or message.meets(goal_key(journey.version, index), goal.where):
                self.run_.exit_outcome = goal.goal
                return

    @workflow.signal(name=EXIT_SIGNAL)
    def on_exit(self, request: ExitRequest) -> None:
        if self.run_.exit_outcome is None:
            self.run_.exit_outcome = REMOVED
            self.run_.state.context["removed_reason"] = request.reason

    @workflow.query(name=STATE_QUERY)
    def state(self) -> JourneyStateView:
        run, state = self.run_, self.run_.state
        return JourneyStateView(
            journey=run.journey.key,
            version=run.journey.version,
            contact=run.input.contact_id,
            current_step=state.current,
            waiting_for=state.waiting_for,
            until=state.deadline,
            outcome=state.outcome,
            runs=state.runs,
            path=list(state.path),
            path_dropped=state.path_dropped,
            earlier=list(state.earlier),
        )

    # ------------------------------------------------------------------ the interpreter

    @workflow.run
    async def run(self, data: JourneyInput) -> JourneyResult:
        try:
            return await self._interpret(data)
        except FailureError as error:
            # The run is about to fail: close its entry as failed first, so entry rules and
            # counts do not see the contact as still in the journey. Terminations and timeouts
            # run no workflow code; `close_failed_entries` catches those.
            if workflow.patched(FAILED_ENTRY_PATCH):
                await self._close_failed(error)
            raise

    async def _close_failed(self, error: FailureError) -> None:
        run = self.run_
        cause = error.cause or error
        if run.state.step_started_at is not None:
            run.leave_step(Next(outcome=FAILED, via=FAILED))
        await self._finish_entry(EntryFinish(
            workflow_id=workflow.info().workflow_id,
            journey_key=run.journey.key,
            contact_id=run.input.contact_id,
            outcome=FAILED,
            now=run.now(),
            reason=f"step {run.state.current}: {type(cause).__name__}: {cause}"[:2000],
            context=run.context(),
        ))

    async def _finish_entry(self, request: EntryFinish) -> None:
        """Close the run's entry: a local activity in lean runs (an idempotent update of one row
        needs no task queue), a regular one in the runs before `LEAN_RUN_PATCH`. It writes the
        step transitions still buffered."""
        if self.run_.lean:
            await workflow.execute_local_activity(
                FINISH_ENTRY, request, start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY, summary=f"record outcome {request.outcome}",
            )
        else:
            await workflow.execute_activity(
                FINISH_ENTRY, request, start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY, summary=f"record outcome {request.outcome}",
            )
        if request.context is not None:
            self.run_.flushed(request.context.transitions)

    async def _interpret(self, data: JourneyInput) -> JourneyResult:
        run, state = self.run_, self.run_.state
        run.lean = data.lean  # LEAN_RUN_PATCH
        run.entry_by_send = data.entry_by_send
        if data.state is None:
            self._label_run()
        visited_this_run: set[str] = set()
        outcome: str | None = None
        while outcome is None:
            if run.exit_outcome is not None:
                outcome = run.exit_outcome
                break
            name = state.current
            assert name is not None
            fresh = state.step_started_at is None
            if fresh and (name in visited_this_run or run.continue_suggested()):
                await self._continue_as_new()
            step = run.journey.steps[name]
            kind = step_kind(step)
            assert kind is not None
            run.begin_step(kind)
            if not run.lean:
                workflow.upsert_search_attributes([search_attributes.STEP.value_set(name)])
            after: Next = await HANDLERS[kind](step, run)
            if after.resume:
                await self._continue_as_new()
            run.leave_step(after)
            run.end_step()
            visited_this_run.add(name)
            if after.outcome is not None:
                outcome = after.outcome
            else:
                state.current = after.step
        return await self._finish(outcome)

    def _label_run(self) -> None:
        """Search attributes for runs not started by the router (which sets them at start)."""
        run = self.run_
        if run.lean and workflow.info().typed_search_attributes.get(
                search_attributes.JOURNEY) is not None:
            return
        pairs: list[SearchAttributeUpdate[Any]] = [
            search_attributes.JOURNEY.value_set(run.journey.key),
            search_attributes.CONTACT.value_set(run.input.contact_id),
        ]
        if run.journey.version is not None:
            pairs.append(search_attributes.VERSION.value_set(run.journey.version))
        workflow.upsert_search_attributes(pairs)

    async def _continue_as_new(self) -> None:
        run = self.run_
        await workflow.wait_condition(workflow.all_handlers_finished)
        run.state.runs += 1
        # the next run has a history of its own: it may take the lean sequence (LEAN_RUN_PATCH)
        workflow.continue_as_new(run.input.model_copy(update={
            "state": run.state, "lean": True, "entry_by_send": True}))

    async def _finish(self, outcome: str) -> JourneyResult:
        run, state = self.run_, self.run_.state
        if run.exit_outcome is not None and state.path:
            reason = state.context.get("removed_reason") if outcome == REMOVED else None
            state.path[-1].note += f" | exit: {reason or outcome}"
        state.outcome = outcome
        if not run.lean:  # a lean run's CairnStep keeps the last step it waited in
            workflow.upsert_search_attributes([search_attributes.STEP.value_set("end")])
        workflow.set_current_details(f"finished: **{outcome}**")
        if run.entry_closed and outcome == COMPLETED:
            # The last send closed the entry with its ledger row (`SendRequest.closes_entry`),
            # and wrote the step's leave in advance: nothing left for `finish_entry`.
            return JourneyResult(outcome=outcome, path=state.path,
                                 path_dropped=state.path_dropped, earlier=state.earlier)
        await self._finish_entry(EntryFinish(
            workflow_id=workflow.info().workflow_id,
            journey_key=run.journey.key,
            contact_id=run.input.contact_id,
            outcome=outcome,
            now=run.now(),
            context=run.context(),
        ))
        return JourneyResult(outcome=outcome, path=state.path, path_dropped=state.path_dropped,
                             earlier=state.earlier)

