"""What every activity shares: its bound logger, the contact it acts for, its permanent errors.

Permanent errors are non-retryable `ApplicationError`s whose `type` the interpreter's retry policy
names (`ContactNotFound`, `TemplateError`, `ValidationError`): retrying cannot fix them, so the
journey takes its failure branch at once instead of burning its retries.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.typing import FilteringBoundLogger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from cairn.contact import ContactSnapshot
from cairn.contracts import StepContext
from cairn.log import get_logger
from cairn.store import contacts as contacts_repo

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


def permanent(message: str, error_type: str) -> ApplicationError:
    """An error the retry policy must not retry (bad input, missing data)."""
    return ApplicationError(message, type=error_type, non_retryable=True)


async def contact_snapshot(s: AsyncSession, contact_id: str) -> ContactSnapshot:
    """The contact's fresh snapshot, or a permanent `ContactNotFound` error."""
    found = await contacts_repo.snapshot(s, contact_id)
    if found is None:
        raise permanent(
            f"contact {contact_id!r} is not in the store: it may have been erased, or events "
            "were sent under another id; check the contact id the journey was started for",
            CONTACT_NOT_FOUND,
        )
    return found
