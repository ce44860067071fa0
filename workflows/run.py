"""The run context handed to every step handler: journey time, waits, activities and the path.

Handlers say what a step means in a few lines; this module holds the mechanics they share:
durable waits that an exit goal interrupts at once, activities with their timeouts and retries,
and the path a person reads in the `state` query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from cairn import search_attributes
    from cairn.contracts import StepContext
    from cairn.journey import END, Journey
    from cairn.journey_run import (
        COMPLETED,
        DELIVERY_TASK_QUEUE,
        JOURNEY_TASK_QUEUE,
        EventMessage,
        JourneyInput,
        JourneyState,
        PathEntry,
        StepTransition,
        summarise,
    )

PATH_LIMIT = 50
"""Path entries kept one by one in state; older ones are summarised per step (`earlier`: how
often, first and last time) and counted (`path_dropped`). Runs loop for years and carry their
state through every continue-as-new, so this bounds what a run carries: 50 entries are about
9 KB where 500 were 86 KB. Nothing the interpreter decides reads the path (it is for people,
in the `state` query and the result), so a run keeping fewer entries replays the same commands.
"""

TRANSITION_BUFFER_LIMIT = 200
"""Step transitions a run keeps for its next activity to write. A loop of waits and decisions
calls no writing activity until it ends, and the buffer travels through every continue-as-new:
beyond this many, the oldest are dropped (the report then misses those visits)."""

HEARD_LIMIT = 200
SEEN_IDS_LIMIT = 1000

ACTIVITY_TIMEOUT = timedelta(seconds=30)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=20,
    non_retryable_error_types=["ContactNotFound", "TemplateError", "ValidationError"],
)

Result = TypeVar("Result", bound=BaseModel)

LEAN_RUN_PATCH = "lean-run"
"""Runs started before the lean sequence did more per run, and replay so: they upserted
`CairnStep` at every step (and the labels the router had already set), decided `if` and closed
the entry in regular activities, and asked `prepare_send` before each `deliver_message`. Lean runs
upsert the step only when they wait on it (views list running runs, so a closed run keeps the
last step it waited in), read and close with local activities, and
let `deliver_message` plan the send itself.

Not a `workflow.patched` marker: the SDK upserts the `TemporalChangeVersion` search attribute with
each patch, one more upsert (a billable action) in every run. The choice travels in the input
instead (`JourneyInput.lean`, set by the router and at every continue-as-new), which the inputs of
runs recorded before it lack, so they replay as recorded."""

EXIT_PREFIX = "exit:"
"""`left_by` of a step where an exit goal (`exit:<goal>`) or an operator (`exit:removed`) ended
the journey."""

ANCHOR_SLACK = timedelta(minutes=1)
"""How long after its anchor the journey's clock stays on it (see `JourneyRun.now`)."""


def _same_visit(one: StepTransition, other: StepTransition) -> bool:
    return (one.seq, one.step, one.visit) == (other.seq, other.step, other.visit)


def _add_leave(buffer: list[StepTransition], left: StepTransition) -> None:
    """Add how a step was left; when the buffer ends with the same visit's reach, not written
    yet, the leave replaces it (it says it all)."""
    if buffer and _same_visit(buffer[-1], left) and buffer[-1].left_by is None:
        buffer[-1] = left
    else:
        buffer.append(left)


class Waited(Enum):
    """How a wait ended."""

    ELAPSED = "elapsed"
    SATISFIED = "satisfied"
    EXITED = "exited"
    CONTINUE = "continue"


@dataclass
class Next:
    """Where the interpreter goes after a step.

    `step` is the next step's name (or `end`); `outcome` ends the journey with that outcome;
    `resume` continues as new and re-enters the same step (its deadline is kept in state).
    `via` is the routing key the step is left by, as the journey's graph names it (`then`,
    `paths[1]`, `timeout_next`...); unset: `next`, or for an outcome `end`, or `exit:<goal>`
    when an exit goal (or an operator) ended the journey there.
    """

    step: str | None = None
    outcome: str | None = None
    resume: bool = False
    via: str | None = None

    @classmethod
    def to(cls, step: str, via: str | None = None) -> Next:
        if step == END:
            return cls(outcome=COMPLETED, via=via or "next")
        return cls(step=step, via=via)


class JourneyRun:
    """One run's view of its journey: definition, state, journey time and shared mechanics."""

    def __init__(self, data: JourneyInput, state: JourneyState) -> None:
        self.input = data
        self.journey: Journey = data.journey
        self.state = state
        self.exit_outcome: str | None = None
        self.offset = timedelta(seconds=data.clock_offset_seconds)
        self.lean = False
        """Whether this run does the lean sequence of commands (`LEAN_RUN_PATCH`)."""
        self.entry_by_send = False
        """Whether a last send may close the entry (`JourneyInput.entry_by_send`)."""
        self.entry_closed = False
        """The entry was closed `completed` by the run's last send (`SendOutcome.entry_closed`)."""

    # ------------------------------------------------------------------ time

    def now(self) -> datetime:
        """Journey time, to the second: Temporal's deterministic time, shifted only in simulations.

        Within a minute after the journey's anchor (the trigger's time at entry, the end of the
        last wait that ran its course) it is the anchor itself: what a step does right after a
        wait happens at the wait's end, however long the activities before it took. Deadlines
        are computed from it while timers run against the precise time, so processing time never
        accumulates into drift: a monthly loop still fires at 09:00:00 after five years, and the
        same scenario gives the same times on a loaded machine.
        """
        real = self.precise_now().replace(microsecond=0)
        anchor = self.state.anchor
        if anchor is not None and timedelta(0) <= real - anchor <= ANCHOR_SLACK:
            return anchor
        return real

    def precise_now(self) -> datetime:
        return workflow.now() + self.offset

    def to_server_time(self, moment: datetime) -> datetime:
        return moment - self.offset

    # ------------------------------------------------------------------ steps and path

    @property
    def step(self) -> str:
        assert self.state.current is not None
        return self.state.current

    @property
    def iteration(self) -> int:
        return self.state.visits.get(self.step, 1)

    def context(self, *, transitions: bool = True) -> StepContext:
        """Who acts where and when; the idempotency key of every side effect derives from it.

        It carries the step transitions buffered so far, for the activity to write; without
        `transitions` (a read that writes nothing else) they wait for the next activity."""
        return StepContext(
            workflow_id=workflow.info().workflow_id,
            journey_key=self.journey.key,
            journey_version=self.journey.version,
            contact_id=self.input.contact_id,
            step=self.step,
            iteration=self.iteration,
            now=self.now(),
            entry_id=workflow.info().first_execution_run_id,
            entered_at=self.state.entered_at,
            transitions=list(self.state.transitions) if transitions else [],
        )

    def note(self, text: str) -> None:
        """Say in the path what the current step did or decided."""
        if self.state.path and self.state.path[-1].step == self.step:
            self.state.path[-1].note = text
        workflow.set_current_details(f"**{self.step}**: {text}")

    def begin_step(self, kind: str) -> None:
        """Open a path entry for the step, unless a continue-as-new resumed it mid-wait."""
        if self.state.step_started_at is not None:
            return
        self.state.visits[self.step] = self.state.visits.get(self.step, 0) + 1
        self.state.step_started_at = self.now()
        self.state.transition_seq += 1
        self.state.transitions.append(StepTransition(
            seq=self.state.transition_seq, step=self.step, visit=self.iteration,
            reached_at=self.state.step_started_at))
        del self.state.transitions[:-TRANSITION_BUFFER_LIMIT]
        self.state.step_started_seq = self.state.next_seq - 1
        self.state.path.append(PathEntry(step=self.step, at=self.now(), note="", kind=kind))
        if len(self.state.path) > PATH_LIMIT:
            dropped = len(self.state.path) - PATH_LIMIT
            self.state.earlier = summarise(self.state.earlier, self.state.path[:dropped])
            del self.state.path[:dropped]
            self.state.path_dropped += dropped

    def leave_step(self, after: Next) -> None:
        """Buffer how the contact left the current step, for the next activity to write."""
        via = after.via
        if via is None:
            if after.outcome is not None and after.outcome == self.exit_outcome:
                via = f"{EXIT_PREFIX}{after.outcome}"
            else:
                via = "end" if after.outcome is not None else "next"
        left = StepTransition(
            seq=self.state.transition_seq, step=self.step, visit=self.iteration,
            reached_at=self.state.step_started_at or self.now(), left_by=via,
            left_at=self.now(), next_step=after.step or END)
        _add_leave(self.state.transitions, left)
        del self.state.transitions[:-TRANSITION_BUFFER_LIMIT]

    def _expected_leave(self) -> StepTransition | None:
        """An acting step is left by `next` once its activity is done (all but a failed send
        with `on_failure`, or a held one): its activity writes that in advance, so the store
        does not show the contact here while it waits in the next step (where no activity
        writes). The interpreter's own record of the leave, written later, has the last word."""
        step = self.journey.steps.get(self.step)
        following = getattr(step, "next", None)
        if step is None or step.role != "act" or not isinstance(following, str) \
                or self.state.step_started_at is None:
            return None
        return StepTransition(
            seq=self.state.transition_seq, step=self.step, visit=self.iteration,
            reached_at=self.state.step_started_at, left_by="next", left_at=self.now(),
            next_step=following)

    def flushed(self, sent: list[StepTransition]) -> None:
        """Drop the buffered transitions an activity has written."""
        if sent:
            written = {(t.seq, t.step, t.visit, t.left_by) for t in sent}
            left = {(t.seq, t.step, t.visit) for t in sent if t.left_by is not None}
            self.state.transitions = [
                t for t in self.state.transitions
                if (t.seq, t.step, t.visit, t.left_by) not in written
                and not (t.left_by is None and (t.seq, t.step, t.visit) in left)]

    def end_step(self) -> None:
        self.state.step_started_at = None
        self.state.deadline = None
        self.state.waiting_for = None

    def label_step(self, name: str) -> None:
        """Set `CairnStep` to `name` unless it already says so (the router sets the first step
        at start; continue-as-new keeps the attributes), so operators see where runs wait."""
        current = workflow.info().typed_search_attributes.get(search_attributes.STEP)
        if current != name:
            workflow.upsert_search_attributes([search_attributes.STEP.value_set(name)])

    # ------------------------------------------------------------------ waiting

    def continue_suggested(self) -> bool:
        """Temporal suggests it, or the run reached the input's `history_limit`. The history
        length is part of each workflow task, so replays see the same answer."""
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        limit = self.input.history_limit
        return limit is not None and info.get_current_history_length() >= limit

    async def wait(
        self,
        deadline: datetime,
        summary: str,
        *,
        until: Callable[[], bool] | None = None,
    ) -> Waited:
        """Wait durably until `deadline` (journey time), an `until` condition, or an exit goal.

        The deadline is kept in state first, so a run that continues as new mid-wait resumes
        this same wait with the same end.
        """
        self.state.deadline = deadline
        self.state.waiting_for = summary
        if self.lean:
            self.label_step(self.step)

        def settled() -> bool:
            return (
                self.exit_outcome is not None
                or (until is not None and until())
                or self.continue_suggested()
            )

        remaining = deadline - self.precise_now()
        timed_out = remaining <= timedelta(0)
        if not timed_out and not settled():
            try:
                await workflow.wait_condition(settled, timeout=remaining, timeout_summary=summary)
            except TimeoutError:
                timed_out = True
        if self.exit_outcome is not None:
            return Waited.EXITED
        if until is not None and until():
            self.state.anchor = None  # an event ended it, at no moment the journey chose
            return Waited.SATISFIED
        if timed_out or self.precise_now() >= deadline:
            self.state.anchor = deadline
            return Waited.ELAPSED
        return Waited.CONTINUE

    def after_wait(self, waited: Waited, elapsed_to: str) -> Next:
        """The usual routing after a plain wait."""
        if waited is Waited.EXITED:
            return Next(outcome=self.exit_outcome)
        if waited is Waited.CONTINUE:
            return Next(resume=True)
        return Next.to(elapsed_to)

    # ------------------------------------------------------------------ activities

    async def act(
        self,
        name: str,
        request: BaseModel,
        result_type: type[Result] | None,
        summary: str,
        *,
        delivery: bool = False,
        timeout: timedelta = ACTIVITY_TIMEOUT,
        local: bool = False,
    ) -> Any:
        """Run an activity with Cairn's timeouts and retries, labelled for the Temporal UI.

        `local`: run it as a local activity in this worker (for reads and bookkeeping that need
        no queue of their own): its result is a marker in the history, with no schedule, start
        and completion events nor a round trip through the server's task queue.
        """
        context = getattr(request, "context", None)
        sent = context.transitions if isinstance(context, StepContext) else []
        expected = self._expected_leave()
        if expected is not None and isinstance(context, StepContext) and expected not in sent:
            _add_leave(sent, expected)
        if local:
            result = await workflow.execute_local_activity(
                name,
                request,
                result_type=result_type,
                start_to_close_timeout=timeout,
                retry_policy=ACTIVITY_RETRY,
                summary=summary,
            )
            self.flushed(sent)
            return result
        result = await workflow.execute_activity(
            name,
            request,
            result_type=result_type,
            task_queue=self.delivery_queue if delivery else self.journey_queue,
            start_to_close_timeout=timeout,
            retry_policy=ACTIVITY_RETRY,
            summary=summary,
        )
        self.flushed(sent)
        return result

    @property
    def journey_queue(self) -> str:
        return workflow.info().task_queue or JOURNEY_TASK_QUEUE

    @property
    def delivery_queue(self) -> str:
        """Sends run on their own queue: named in the input, else paired with the journey queue."""
        if self.input.delivery_task_queue:
            return self.input.delivery_task_queue
        queue = self.journey_queue
        if queue.endswith("journeys") and queue != JOURNEY_TASK_QUEUE:
            return queue[: -len("journeys")] + "delivery"
        return DELIVERY_TASK_QUEUE

    # ------------------------------------------------------------------ events

    def heard_since(self, seq: int) -> list[EventMessage]:
        return [h.message for h in self.state.heard if h.seq > seq]
