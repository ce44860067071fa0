"""Reading contacts for decisions: the snapshot, and conditions evaluated on fresh data.

`evaluate_condition` runs the pure evaluator of `cairn.conditions` with the two things only the
store knows: event counts for `has_done` (windows measured from the journey's `now`) and the
contact's channels for `reachable`.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.context import (
    caught_scope,
    contact_snapshot,
    event_scope,
    record_transitions,
    step_log,
)
from cairn.conditions import (
    ConditionScope,
    HasDone,
    PropertyCondition,
    ReachableSpec,
    Verdict,
    evaluate,
    leaves,
    window_start,
)
from cairn.contact import ContactSnapshot, reads_scores
from cairn.contracts import (
    EVALUATE_CONDITION,
    LOAD_CONTACT,
    PLAN_WAIT,
    ConditionRequest,
    LoadContactRequest,
    VerdictResult,
    WaitPlan,
    WaitPlanRequest,
)
from cairn.log import get_logger
from cairn.reachability import reachability
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.wait_times import attribute_deadline, window_deadline

log = get_logger(__name__)


def reads_trigger(condition: Any) -> bool:
    """Whether a condition reads the trigger event (a `property` without `event`)."""
    return any(isinstance(leaf, PropertyCondition) and leaf.event is None
               for _, leaf in leaves(condition, ""))


class ContactActivities:
    """Activities that read a contact: its snapshot and the conditions decided on it."""

    def __init__(self, store: Store, *, disabled_channels: tuple[str, ...] = ()) -> None:
        self.store = store
        self.disabled_channels = disabled_channels

    @activity.defn(name=LOAD_CONTACT)
    async def load_contact(self, request: LoadContactRequest) -> ContactSnapshot:
        """The contact's profile, channels, scores and segments as of now."""
        async with self.store.session() as s:
            snapshot = await contact_snapshot(s, request.contact_id)
        log.debug("contact.loaded", contact=request.contact_id)
        return snapshot

    @activity.defn(name=PLAN_WAIT)
    async def plan_wait(self, request: WaitPlanRequest) -> WaitPlan:
        """When a wait on the contact's date attribute or local hours ends: the date and the
        time zone are read here, so only the deadline enters the run's history."""
        context = request.context
        async with self.store.session() as s:
            if await record_transitions(s, context):
                await s.commit()
            contact = await contact_snapshot(s, context.contact_id)
        if request.wait_until is not None:
            deadline = attribute_deadline(request.wait_until, contact.attributes,
                                          contact.timezone, request.default_timezone)
        else:
            assert request.window is not None
            deadline = window_deadline(request.window, context.now, contact.timezone,
                                       request.default_timezone)
        step_log(context).debug("wait.planned", deadline=deadline)
        return WaitPlan(deadline=deadline)

    @activity.defn(name=EVALUATE_CONDITION)
    async def evaluate_condition(self, request: ConditionRequest) -> VerdictResult:
        """Decide an `if` condition on a fresh snapshot; the trigger is the event in scope, and
        the events the journey's waits caught come with the request."""
        context = request.context
        bound = step_log(context)
        async with self.store.session() as s:
            contact = await contact_snapshot(s, context.contact_id,
                                             scores=reads_scores(request.condition))

            async def count_events(spec: HasDone) -> int:
                since = window_start(spec, now=context.now, entered_at=request.entered_at)
                return await events_repo.count_events(
                    s, context.contact_id, spec.event, since=since, until=context.now,
                    where=spec.where,
                )

            async def sum_events(spec: HasDone) -> float:
                assert spec.sum is not None  # evaluate asks for sums of has_done with `sum`
                since = window_start(spec, now=context.now, entered_at=request.entered_at)
                return await events_repo.sum_event_property(
                    s, context.contact_id, spec.event, spec.sum, since=since, until=context.now,
                    where=spec.where,
                )

            def reachable(spec: ReachableSpec) -> Verdict:
                return reachability(contact, spec.channel, spec.category,
                                    disabled=self.disabled_channels)

            verdict = await evaluate(
                request.condition,
                ConditionScope(
                    now=context.now,
                    contact=contact.as_scope(),
                    # read from the store only when a `property` condition looks at it
                    event=(await event_scope(s, request.trigger)
                           if reads_trigger(request.condition) else None),
                    count_events=count_events,
                    sum_events=sum_events,
                    reachable=reachable,
                    caught=await caught_scope(s, request.caught_events),
                    show_values=False,  # the reason goes into the journey's path
                ),
            )
        # The reason quotes the values that decided (traits, properties): it goes to the run's
        # path, not to the log.
        bound.info("condition.decided", result=verdict.result)
        return VerdictResult(result=verdict.result, reason=verdict.reason)
