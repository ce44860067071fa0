"""Reading contacts for decisions: the snapshot, and conditions evaluated on fresh data.

`evaluate_condition` runs the pure evaluator of `cairn.conditions` with the two things only the
store knows: event counts for `has_done` (windows measured from the journey's `now`) and the
contact's channels for `reachable`.
"""

from __future__ import annotations

from temporalio import activity

from activities.context import contact_snapshot, step_log
from cairn.conditions import ConditionScope, HasDone, ReachableSpec, Verdict, evaluate, window_start
from cairn.contact import ContactSnapshot
from cairn.contracts import (
    EVALUATE_CONDITION,
    LOAD_CONTACT,
    ConditionRequest,
    LoadContactRequest,
    VerdictResult,
)
from cairn.log import get_logger
from cairn.reachability import reachability
from cairn.store import events as events_repo
from cairn.store.db import Store

log = get_logger(__name__)


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

    @activity.defn(name=EVALUATE_CONDITION)
    async def evaluate_condition(self, request: ConditionRequest) -> VerdictResult:
        """Decide an `if` condition on a fresh snapshot; the trigger is the event in scope, and
        the events the journey's waits caught come with the request."""
        context = request.context
        bound = step_log(context)
        async with self.store.session() as s:
            contact = await contact_snapshot(s, context.contact_id)

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
                    event=request.trigger.as_scope() if request.trigger else None,
                    count_events=count_events,
                    sum_events=sum_events,
                    reachable=reachable,
                    caught=request.caught_events,
                ),
            )
        # The reason quotes the values that decided (traits, properties): it goes to the run's
        # path, not to the log.
        bound.info("condition.decided", result=verdict.result)
        return VerdictResult(result=verdict.result, reason=verdict.reason)
