"""Activity failures without personal data: the interceptor every Cairn worker runs.

Whatever an activity raises becomes a failure in the run's history, message and stack trace in
clear (the payload codec encrypts payloads, not failure text), and the cause chain with it. An SMTP
server's `550 <ana@example.com> rejected`, a template error quoting a trait, a database error
quoting its parameters would all land there. So every failure leaves the activity as one
`ApplicationError` whose message is scrubbed (`cairn.privacy.scrub`: the contact's own values and
anything like an email address or a phone number), with the original's type, retry decision,
retry delay and details (payloads, which the codec encrypts), and no cause chain. The detail stays
in the worker's log, scrubbed as well (`activity.failed`: type, message, traceback), and in the
store where the activity kept it (a ledger row's `reason`, erased with the contact).
"""

from __future__ import annotations

import traceback
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from cairn.log import get_logger
from cairn.privacy.scrub import known_values, scrub
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store

log = get_logger(__name__)


def _contact_id(args: Any) -> str | None:
    """The contact an activity acts for, from its request's `context` (most activities)."""
    for arg in args or ():
        context = getattr(arg, "context", None)
        contact_id = getattr(context, "contact_id", None) or getattr(arg, "contact_id", None)
        if isinstance(contact_id, str):
            return contact_id
    return None


async def _known(store: Store | None, contact_id: str | None) -> list[str]:
    if store is None or contact_id is None:
        return []
    try:
        async with store.session() as s:
            contact = await contacts_repo.snapshot(s, contact_id)
    except Exception:  # the store may be what failed: the patterns still apply
        return []
    if contact is None:
        return []
    return [value for value in known_values(
        contact.email, contact.phone, contact.push_tokens,
        [sub.endpoint for sub in contact.web_push], contact.attributes,
    ) if value != contact_id]


def scrubbed_failure(error: Exception, known: list[str]) -> ApplicationError:
    """`error` as the history may hold it: same type and retry decision, scrubbed message."""
    if isinstance(error, ApplicationError):
        message = scrub(error.message, known)
        return ApplicationError(
            message, *error.details, type=error.type, non_retryable=error.non_retryable,
            next_retry_delay=error.next_retry_delay, category=error.category,
        )
    return ApplicationError(scrub(str(error) or type(error).__name__, known),
                            type=type(error).__name__)


class _ScrubFailures(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, store: Store | None) -> None:
        super().__init__(next)
        self.store = store

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        # A cancellation must reach the SDK as one (asyncio's, and async completion, are
        # BaseExceptions and pass anyway).
        except CancelledError:
            raise
        except Exception as error:
            known = await _known(self.store, _contact_id(input.args))
            failure = scrubbed_failure(error, known)
            log.warning("activity.failed", activity=activity.info().activity_type,
                        attempt=activity.info().attempt, error_type=failure.type,
                        error=failure.message,
                        traceback=scrub("".join(traceback.format_exception(error)), known))
            raise failure from None


class ScrubFailures(Interceptor):
    """Scrubs every failing activity's error (see the module); `store` gives the contact's own
    values to take out (without it, only what looks like an address or a number)."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ScrubFailures(next, self.store)
