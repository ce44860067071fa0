"""Exactly once: the deliveries ledger's state machine, for every call Cairn makes outside.

A channel send (`activities.send`) and an action (`activities.actions`: an alert, a webhook, an
audience sync) reach a target that may fail half-way, and Temporal may retry the activity at any
point. Under the step visit's key one row walks these states, and only these:

    claim        (no row)     -> sending      committed before the call
    sent         sending      -> sent         the target answered
    unconfirmed  sending      -> unconfirmed  the call may have gone through (no answer came back)
                                              and the target cannot drop a repeat
    confirmed    unconfirmed  -> sent         the provider's own records show it accepted the
                                              message (a lookup), or a resend was answered
    resend       unconfirmed  -> (call again) the delivery policy says `resend` for the channel
                                              and category, at most `MAX_RESENDS` times
    release      sending      -> (no row)     the failure proves nothing went out (connection
                                              refused, 429, 5xx answer): Temporal retries, after
                                              the target's Retry-After, and the retry starts afresh
    failed       sending      -> failed       the target refused for good

A retry that finds `sending` knows an earlier attempt may have reached the target: it calls again
a target that drops a repeated idempotency key (`idempotent`); otherwise the row becomes
`unconfirmed`, and the policy decides: `keep` answers with it (a loss is possible, never a silent
one: the outbox, the API and the simulator show `unconfirmed`), `resend` calls again (a duplicate
is possible). For the same reason a failure whose outcome is unknown keeps the row `sending` when
the target is idempotent, so the retry calls again. Rows that need no call (a skipped send, an
action the outbox only records, a template that could not render) are written settled by `record`.

Times: `sent_at` is the journey's clock when the call was made (workflow time, which the
simulator moves); `accepted_at` is the wall clock when the target accepted it.

Not here: what a row holds (each kind's module renders it), whether a send may go at all
(`prepare_send`), and asking a provider whether it has an unconfirmed message
(`activities.send`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.typing import FilteringBoundLogger
from temporalio.exceptions import ApplicationError

from cairn import metrics
from cairn.channels.base import ProviderError
from cairn.contracts import PROVIDER_REJECTED, PROVIDER_UNAVAILABLE
from cairn.delivery_policy import MAX_RESENDS
from cairn.privacy.scrub import scrub
from cairn.store import deliveries as deliveries_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery

SENDING = "sending"
SENT = "sent"
UNCONFIRMED = "unconfirmed"
FAILED = "failed"

Refused = Callable[[AsyncSession, Delivery, ProviderError], Awaitable[None]]
"""What a use of the ledger adds to a row the target refused for good, in the same transaction."""


@dataclass(frozen=True)
class Earlier:
    """What an earlier attempt left under the key: a settled row to answer with (`settled`), or
    a `sending` or `unconfirmed` row whose call this attempt makes again (its target drops
    repeated keys, or the policy says `resend`)."""

    row: Delivery
    settled: bool

    @property
    def unconfirmed(self) -> bool:
        return self.row.status == UNCONFIRMED


def resends_of(row: Delivery) -> int:
    """How many times an unconfirmed send was sent again (kept in its `response`)."""
    return int((row.response or {}).get("resends") or 0)


def may_resend(row: Delivery, resend: bool) -> bool:
    return resend and resends_of(row) < MAX_RESENDS


def retry_later(error: ProviderError) -> ApplicationError:
    """The error that lets Temporal retry a call that may succeed later, after Retry-After."""
    delay = timedelta(seconds=error.retry_after) if error.retry_after is not None else None
    return ApplicationError(str(error), type=PROVIDER_UNAVAILABLE, next_retry_delay=delay)


def refusal(error: ProviderError) -> ApplicationError:
    """The error of a call the target refused for good: not retried."""
    return ApplicationError(str(error), type=PROVIDER_REJECTED, non_retryable=True)


@dataclass(frozen=True)
class Ledger:
    """The state machine as one kind of row uses it.

    `events` names the log events (`delivery.unconfirmed`, `action.retry`...). `unconfirmed` is
    the reason an unconfirmed row gives (followed by the error, when one came back).
    `merges_response`: a send's `response` holds, from the claim on, what a retry needs to send
    the same message again; the provider's answer is merged into it, and an unconfirmed send is
    marked there and dated. An action's `response` is the target's answer alone.
    """

    store: Store
    events: str
    unconfirmed: str
    merges_response: bool = False

    async def earlier(
        self, s: AsyncSession, key: str, *, idempotent: bool, now: datetime,
        log: FilteringBoundLogger, resend: bool = False,
    ) -> Earlier | None:
        """What an earlier attempt left under `key`, settling a `sending` row unconfirmed when
        the target cannot drop a repeat; None when the key is free to claim.

        With `resend` (the delivery policy's choice) an unconfirmed row is handed back to be
        sent again, its resend counted in this transaction, until `MAX_RESENDS`.
        """
        row = await deliveries_repo.find_delivery(s, key)
        if row is None:
            return None
        if row.status == SENDING and idempotent:
            return Earlier(row, settled=False)
        if row.status == SENDING:
            self._settle_unconfirmed(row, self.unconfirmed)
            if self.merges_response:
                row.sent_at = row.sent_at or now
            log.warning(f"{self.events}.unconfirmed", delivery_id=row.id)
        elif row.status != UNCONFIRMED:
            log.info(f"{self.events}.duplicate", delivery_id=row.id, status=row.status)
            return Earlier(row, settled=True)
        if may_resend(row, resend):
            return Earlier(row, settled=False)
        return Earlier(row, settled=True)

    @staticmethod
    def count_resend(row: Delivery) -> None:
        """Count a resend on the row before the call (committed with it, so a worker killed
        during the resend still counts it)."""
        row.response = {**(row.response or {}), "resends": resends_of(row) + 1}

    @staticmethod
    async def claim(s: AsyncSession, **columns: Any) -> Delivery:
        """Write the row as `sending`; the caller commits it before making the call."""
        row, new = await deliveries_repo.record_delivery(s, status=SENDING, **columns)
        if new:
            _count(row)
        return row

    @staticmethod
    async def record(s: AsyncSession, **columns: Any) -> tuple[Delivery, bool]:
        """Write a row that needs no call, settled (`status` given): the row, and whether it is
        new (False: an earlier attempt wrote it)."""
        row, new = await deliveries_repo.record_delivery(s, **columns)
        if new:
            _count(row)
        return row, new

    async def sent(
        self, row_id: int, now: datetime, *, response: Any, message_id: str | None,
        provider: str | None = None, accepted_at: datetime | None = None,
        also: Callable[[AsyncSession], Awaitable[object]] | None = None,
    ) -> Delivery:
        """Settle the claimed (or resent) row `sent` with the target's answer (and `provider`,
        when given); `accepted_at` is the wall clock unless the target said when. `also` writes
        in the same transaction (a last send closing its run's entry)."""
        async with self.store.session() as s, s.begin():
            row = await s.get(Delivery, row_id)
            assert row is not None
            self.settle_sent(row, now, response=response, message_id=message_id,
                             provider=provider, accepted_at=accepted_at)
            if also is not None:
                await also(s)
            return row

    def settle_sent(
        self, row: Delivery, now: datetime, *, response: Any, message_id: str | None,
        provider: str | None = None, accepted_at: datetime | None = None,
    ) -> None:
        """`sent` on a row in the caller's transaction: for a target that records only (the
        outbox), whose claim and settlement commit together since nothing left the process."""
        if row.status == UNCONFIRMED:
            row.reason = (f"sent again after an unconfirmed attempt ({resends_of(row)} "
                          "resend(s)); the contact may have it twice")
        row.status = SENT
        if provider is not None:
            row.provider = provider
        row.provider_message_id = message_id
        row.response = {**(row.response or {}), **response} if self.merges_response \
            else response
        row.sent_at = now
        row.accepted_at = accepted_at or datetime.now(UTC)
        _count(row)

    async def confirmed(
        self, row_id: int, *, message_id: str | None, accepted_at: datetime | None,
        response: dict[str, Any], log: FilteringBoundLogger,
    ) -> Delivery:
        """Settle an unconfirmed row `sent`: the provider's own records show it accepted it."""
        async with self.store.session() as s, s.begin():
            row = await s.get(Delivery, row_id)
            assert row is not None
            row.status = SENT
            row.reason = f"confirmed by the provider after an unconfirmed attempt ({row.reason})"
            row.provider_message_id = message_id or row.provider_message_id
            row.accepted_at = accepted_at or row.accepted_at
            row.response = {**(row.response or {}), **response, "confirmed": True}
            log.info(f"{self.events}.confirmed", delivery_id=row.id,
                     provider_message_id=message_id)
        _count(row)
        return row

    async def failed(
        self, row_id: int, error: ProviderError, *, idempotent: bool, now: datetime,
        log: FilteringBoundLogger, refused: Refused | None = None, resend: bool = False,
    ) -> Delivery:
        """Settle the claimed row after a failed call: unconfirmed (returned, or raised for a
        retry that resends it when `resend` allows), released for a retry or failed (both
        raised, once the ledger change is committed)."""
        async with self.store.session() as s, s.begin():
            row = await s.get(Delivery, row_id)
            assert row is not None
            if error.outcome_unknown and not idempotent:
                self._settle_unconfirmed(row, f"{self.unconfirmed}: {error}")
                row.sent_at = now
                again = may_resend(row, resend)
                log.warning(f"{self.events}.unconfirmed", delivery_id=row.id,
                            error=scrub(str(error)), resend=again)
                if not again:
                    return row
            elif error.retryable:
                if not error.outcome_unknown:
                    await s.execute(delete(Delivery).where(Delivery.id == row_id))
                log.warning(f"{self.events}.retry", error=scrub(str(error)),
                            retry_after=error.retry_after)
            else:
                row.status = FAILED
                row.reason = str(error)
                if refused is not None:
                    await refused(s, row, error)
                log.warning(f"{self.events}.rejected", delivery_id=row.id, error=scrub(str(error)),
                            invalid_recipient=error.invalid_recipient)
        if row.status == FAILED:
            _count(row)
        # Raised after the commit: the ledger change above must stand whatever Temporal does
        # (an unconfirmed row to resend is found by the retry, which sends it again).
        if error.outcome_unknown and not idempotent:
            raise retry_later(error)
        raise retry_later(error) if error.retryable else refusal(error)

    def _settle_unconfirmed(self, row: Delivery, reason: str) -> None:
        _count_status(row, UNCONFIRMED)
        row.status = UNCONFIRMED
        row.reason = reason
        if self.merges_response:
            row.response = {**(row.response or {}), "unconfirmed": True}


def _count(row: Delivery) -> None:
    _count_status(row, row.status)


def _count_status(row: Delivery, status: str) -> None:
    """A send row reached `status` (`cairn_sends_total`); actions are not sends."""
    if row.kind == "send":
        metrics.SENDS.labels(channel=row.channel or "", status=status).inc()
