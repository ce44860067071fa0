"""Erasing a contact (`DELETE /v1/contacts/{id}`): end its runs, delete its data, destroy its key.

In order, all before the answer and within about 1.5 s, however its runs behave:

1. each running journey of the contact is asked to exit (signal `exit`, reason "contact
   erased"), and given `grace` to end on its own;
2. a run still open after the grace (stuck on an activity that keeps failing, a worker that is
   down) is terminated; a terminate that Temporal does not confirm in time goes on in the
   background;
3. in one transaction: the contact's rows (profile, events, deliveries, scores and their history,
   segment memberships, tasks, entries, inbox messages, delivery feedback, also reports that
   named its address without finding it, refused batch calls naming it) are deleted, its
   suppressed channels are kept only as keyed hashes of their addresses
   (`cairn.store.suppressions.keep_erased`), its data key is destroyed, and an audit record
   (`erasures`) keeps that it happened: the contact id's SHA-256, when, by which key name, how
   many rows went and how the runs ended;
4. the data key is forgotten by this process's codec (other processes see the new `erasures` row
   and drop their key caches within `cairn.privacy.keys.RECHECK_SECONDS`, 1 s), so whatever of
   the contact remains in Temporal histories is unreadable.

The runs end before the data goes, so a run that exits normally does so while it can still read
its history; the counters that stay (published journeys' totals, the audit record) hold no
personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from cairn.journey_run import EXIT_SIGNAL, ExitRequest
from cairn.log import get_logger
from cairn.privacy.codec import codec_keys
from cairn.privacy.keys import contact_owner
from cairn.store import contacts as contacts_repo
from cairn.store import data_keys as data_keys_repo
from cairn.store import entries as entries_repo
from cairn.store import identity, suppressions
from cairn.store import rejected as rejected_repo
from cairn.store.db import Store
from cairn.store.schema import (
    DeliveryFeedback,
    DeliveryLink,
    ErasureRecord,
    ExperimentAssignment,
    InboxMessage,
    StepTransitionRecord,
)

log = get_logger(__name__)

ERASE_REASON = "contact erased"
EXIT_GRACE = timedelta(seconds=1)
"""How long a run asked to exit may take to end by itself before it is terminated."""
RPC_TIMEOUT = timedelta(seconds=0.3)
"""How long erasure waits on one Temporal call before leaving it to the background."""

_BACKGROUND: set[asyncio.Task[None]] = set()


class ContactNotFoundError(LookupError):
    """There is no contact of that id to erase."""


class TemporalUnavailableError(RuntimeError):
    """Runs must be ended and there is no Temporal client to end them with."""


@dataclass
class Erasure:
    """What an erasure did."""

    contact_id: str
    journeys_ended: list[str] = field(default_factory=list)
    journeys_terminated: list[str] = field(default_factory=list)
    journeys_still_ending: list[str] = field(default_factory=list)
    erased: dict[str, int] = field(default_factory=dict)
    data_key_destroyed: bool = False


def contact_hash(contact_id: str) -> str:
    """The id as the audit record keeps it: enough to answer "was this contact erased?"."""
    return hashlib.sha256(contact_id.encode()).hexdigest()


async def _closed(client: Client, workflow_id: str) -> bool:
    try:
        described = await asyncio.wait_for(client.get_workflow_handle(workflow_id).describe(),
                                           RPC_TIMEOUT.total_seconds())
    except RPCError as error:
        return error.status == RPCStatusCode.NOT_FOUND
    except TimeoutError:
        return False
    return described.status != WorkflowExecutionStatus.RUNNING


async def _signal_exit(client: Client, workflow_id: str) -> None:
    # Gone already, or slow: the terminate after the grace covers it.
    with contextlib.suppress(RPCError, TimeoutError):
        await asyncio.wait_for(
            client.get_workflow_handle(workflow_id).signal(
                EXIT_SIGNAL, ExitRequest(reason=ERASE_REASON)),
            RPC_TIMEOUT.total_seconds())


async def _terminate(client: Client, workflow_id: str) -> None:
    try:
        await client.get_workflow_handle(workflow_id).terminate(reason=ERASE_REASON)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise


def _in_background(work: asyncio.Future[object], workflow_ids: list[str]) -> None:
    async def finish() -> None:
        try:
            await work
        except Exception as error:
            log.warning("contact.erase_terminate_failed", runs=workflow_ids,
                        error=type(error).__name__)

    task = asyncio.get_running_loop().create_task(finish())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def end_runs(
    client: Client, workflow_ids: list[str], *, grace: timedelta = EXIT_GRACE
) -> tuple[list[str], list[str], list[str]]:
    """Ask each run to exit, wait up to `grace`, terminate the rest:
    (ended by themselves, terminated, still being terminated in the background)."""
    unique = list(dict.fromkeys(workflow_ids))
    await asyncio.gather(*(_signal_exit(client, wid) for wid in unique))
    deadline = asyncio.get_running_loop().time() + grace.total_seconds()
    open_ = unique
    while True:
        closed = await asyncio.gather(*(_closed(client, wid) for wid in open_))
        open_ = [wid for wid, done in zip(open_, closed, strict=True) if not done]
        if not open_ or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.1)
    ended = [wid for wid in unique if wid not in open_]
    if not open_:
        return ended, [], []
    terminating = asyncio.ensure_future(
        asyncio.gather(*(_terminate(client, wid) for wid in open_)))
    done, _ = await asyncio.wait({terminating}, timeout=RPC_TIMEOUT.total_seconds() * 2)
    if terminating in done and terminating.exception() is None:
        return ended, open_, []
    if terminating not in done:
        _in_background(terminating, open_)
    return ended, [], open_


async def _erase_unmatched_feedback(session: AsyncSession, addresses: set[str]) -> int:
    if not addresses:
        return 0
    deleted = await session.execute(
        delete(DeliveryFeedback).where(
            DeliveryFeedback.contact_id.is_(None),
            func.lower(DeliveryFeedback.recipient).in_({a.lower() for a in addresses}))
        .execution_options(synchronize_session=False))
    return int(getattr(deleted, "rowcount", 0) or 0)


async def erase_contact(
    store: Store, client: Client | None, contact_id: str, *, erased_by: str | None = None,
    grace: timedelta = EXIT_GRACE,
) -> Erasure:
    """End the contact's runs, delete its data and destroy its data key (see the module)."""
    async with store.session() as session:
        if await contacts_repo.get_contact(session, contact_id) is None:
            raise ContactNotFoundError(contact_id)
        running = [row.workflow_id
                   for row in await entries_repo.open_entries(session, contact_id=contact_id)]
    result = Erasure(contact_id=contact_id)
    if running:
        if client is None:
            raise TemporalUnavailableError(
                f"the contact is in {len(running)} running journey(s) and this API has no "
                "Temporal connection to end them; start the API with Temporal reachable "
                "(CAIRN_TEMPORAL_ADDRESS) and erase again"
            )
        (result.journeys_ended, result.journeys_terminated,
         result.journeys_still_ending) = await end_runs(client, running, grace=grace)
    now = datetime.now(UTC)
    owner = contact_owner(contact_id)
    async with store.session() as session, session.begin():
        row = await contacts_repo.get_contact(session, contact_id)
        kept = await suppressions.keep_erased(session, row, now) if row is not None else 0
        addresses = {a for a in (row.email, row.phone) if a} if row is not None else set()
        counts = vars(await identity.erase_contact(session, contact_id)).copy()
        for name, table in (("inbox_messages", InboxMessage), ("feedback", DeliveryFeedback),
                            ("links", DeliveryLink),
                            ("experiment_arms", ExperimentAssignment),
                            ("step_transitions", StepTransitionRecord)):
            deleted = await session.execute(
                delete(table).where(table.contact_id == contact_id)
                .execution_options(synchronize_session=False))
            counts[name] = int(getattr(deleted, "rowcount", 0) or 0)
        # reports that named the address but found no contact (an inbound SMS before identify)
        counts["feedback"] += await _erase_unmatched_feedback(session, addresses)
        counts["suppressions_kept_hashed"] = kept
        counts["rejected_calls"] = await rejected_repo.erase_rejected_of(session, contact_id)
        destroyed = await data_keys_repo.destroy_data_key(session, owner, now)
        session.add(ErasureRecord(
            contact_hash=contact_hash(contact_id), erased_at=now, erased_by=erased_by,
            counts=counts, runs_ended=len(result.journeys_ended),
            runs_terminated=len(result.journeys_terminated) + len(result.journeys_still_ending)))
    keys = codec_keys(client.data_converter) if client is not None else None
    if keys is not None:
        # The codec's own key store (the same table, or memory in simulations) and its cache.
        destroyed = await keys.destroy_contact(contact_id) or destroyed
        keys.forget(owner, destroyed)
    result.erased = counts
    result.data_key_destroyed = destroyed is not None
    log.info("contact.erased", contact_hash=contact_hash(contact_id)[:12],
             runs_ended=len(result.journeys_ended),
             runs_terminated=len(result.journeys_terminated),
             runs_terminating=len(result.journeys_still_ending), rows=sum(counts.values()))
    return result
