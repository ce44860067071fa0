"""What every activity shares: its bound logger, the contact it acts for, the events it reads,
its permanent errors.

Events reach journeys by reference (`cairn.journey_run.EventMessage`): the trigger, and the events
`wait_for_event` steps caught (kept in the journey's context under `events`), carry no
properties. `event_scope` and `journey_scope` read them back from the store for the conditions and
templates that need them; a message of an older run that still carries its properties is used as
it is. A webhook's answer (`save_as`) is kept the same way: the run holds a reference to its ledger
row (`cairn.contracts.saved_response`), which `journey_scope` reads back.

Permanent errors are non-retryable `ApplicationError`s whose `type` the interpreter's retry policy
names (`ContactNotFound`, `TemplateError`, `ValidationError`): retrying cannot fix them, so the
journey takes its failure branch at once instead of burning its retries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.typing import FilteringBoundLogger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from cairn import metrics
from cairn.contact import ContactSnapshot
from cairn.contracts import StepContext, saved_response_id
from cairn.journey_run import CAUGHT_EVENTS, EventMessage
from cairn.log import get_logger
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import transitions as transitions_repo
from cairn.store.schema import Delivery
from cairn.templates import message_scope

CONTACT_NOT_FOUND = "ContactNotFound"
TEMPLATE_ERROR = "TemplateError"
VALIDATION_ERROR = "ValidationError"

log = get_logger("activities")


def step_log(context: StepContext) -> FilteringBoundLogger:
    """The activity's logger, bound to the journey, contact and step it acts for."""
    bound = log.bind(journey=context.journey_key, contact=context.contact_id, step=context.step,
                     workflow_id=context.workflow_id, iteration=context.iteration)
    if activity.in_activity():
        bound = bound.bind(attempt=activity.info().attempt)
    return bound


async def record_transitions(s: AsyncSession, context: StepContext | None) -> int:
    """Write the step visits the run buffered and handed to this activity, in `s`'s transaction
    (the activity's own work commits with them; a retry writes them again, harmlessly)."""
    if context is None or not context.transitions:
        return 0
    written = await transitions_repo.record_transitions(s, context)
    metrics.STEP_TRANSITIONS.labels(journey=context.journey_key).inc(written)
    return written


def permanent(message: str, error_type: str) -> ApplicationError:
    """An error the retry policy must not retry (bad input, missing data)."""
    return ApplicationError(message, type=error_type, non_retryable=True)


async def contact_snapshot(s: AsyncSession, contact_id: str, *,
                           scores: bool = True) -> ContactSnapshot:
    """The contact's fresh snapshot (without scores and segments: `scores=False`), or a
    permanent `ContactNotFound` error."""
    found = await contacts_repo.snapshot(s, contact_id, scores=scores)
    if found is None:
        raise permanent(
            f"contact {contact_id!r} is not in the store: it may have been erased, or events "
            "were sent under another id; check the contact id the journey was started for",
            CONTACT_NOT_FOUND,
        )
    return found


async def _stored_scope(s: AsyncSession, reference: dict[str, Any]) -> dict[str, Any]:
    """An event kept by reference, with its properties read from the store (as it was kept when
    the store no longer has it: an erased contact's events are gone)."""
    if reference.get("properties") or not isinstance(reference.get("message_id"), str):
        return reference
    row = await events_repo.event_by_message_id(s, reference["message_id"])
    if row is None:
        return reference
    return events_repo.event_message(row).as_scope()


async def event_scope(s: AsyncSession, message: EventMessage | None) -> dict[str, Any] | None:
    """The event as conditions and templates read it (`event.properties.*`), from the store."""
    if message is None:
        return None
    return await _stored_scope(s, message.as_scope())


async def caught_scope(s: AsyncSession, caught: dict[str, Any]) -> dict[str, Any]:
    """Caught events (event name -> kept reference), each read back from the store."""
    return {name: await _stored_scope(s, kept) if isinstance(kept, dict) else kept
            for name, kept in caught.items()}


async def saved_scope(s: AsyncSession, journey_context: dict[str, Any]) -> dict[str, Any]:
    """The journey's context with each webhook answer kept by reference (`save_as`) read back
    from its ledger row (None once the row is gone: the contact was erased). A context of an
    older run that still holds the answer itself is used as it is."""
    saved = {name: row_id for name, value in journey_context.items()
             if (row_id := saved_response_id(value)) is not None}
    if not saved:
        return journey_context
    answers = {name: (row.response if (row := await s.get(Delivery, row_id)) else None)
               for name, row_id in saved.items()}
    return {**journey_context, **answers}


async def journey_scope(s: AsyncSession, journey_context: dict[str, Any]) -> dict[str, Any]:
    """The journey's context as templates read it (`journey.events.<name>.properties.*`,
    `journey.<save_as>.*`)."""
    journey_context = await saved_scope(s, journey_context)
    caught = journey_context.get(CAUGHT_EVENTS)
    if not isinstance(caught, dict):
        return journey_context
    return {**journey_context, CAUGHT_EVENTS: await caught_scope(s, caught)}


async def template_scope(
    s: AsyncSession, contact: ContactSnapshot, trigger: EventMessage | None,
    journey_context: dict[str, Any], *, template: Any = None,
) -> dict[str, Any]:
    """What a template sees: the contact now, the trigger and the journey's context, with the
    events read back from the store.

    Given the `template`, the events are read only if its text names them at all (a template
    without the word `event` cannot refer to `event` nor `journey.events`): one query less per
    send for most messages.
    """
    if template is not None and "event" not in repr(template):
        return message_scope(contact.as_scope(), trigger.as_scope() if trigger else None,
                             await saved_scope(s, journey_context))
    return message_scope(contact.as_scope(), await event_scope(s, trigger),
                         await journey_scope(s, journey_context))
