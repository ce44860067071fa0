"""Who is where, read from Temporal's visibility: pages of runs, per-step counts, one run's detail.

Lists and counts come from the search attributes the router sets at start and the interpreter
keeps current (`cairn.search_attributes`), so they cost one visibility call per page or per step
however many runs there are; a run's own `state` query (its path, what it waits for, until when)
is asked only when one run is shown. It does not read Cairn's store: the CLI decides what to do
when Temporal does not answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from cairn import search_attributes
from cairn.journey_run import STATE_QUERY, WORKFLOW_NAME, JourneyStateView

QUERY_TIMEOUT = timedelta(seconds=5)
"""How long a run has to answer `state` (with no worker running it never will)."""

DEFAULT_PAGE_SIZE = 50

COUNTS_AT_ONCE = 8
"""Visibility counts asked at the same time by `step_counts` (the server answers them in
parallel; more only queue)."""


class PageTokenError(ValueError):
    """A `--page-token` that is not one a previous page printed."""


@dataclass
class RunRow:
    """One run as visibility knows it: no query, no history read."""

    workflow_id: str
    journey: str | None
    version: int | None
    contact: str | None
    step: str | None
    started_at: datetime | None
    status: str


@dataclass
class RunPage:
    rows: list[RunRow]
    next_page_token: str | None
    """Pass it back to get the next page; None on the last page."""


def quoted(value: str) -> str:
    """A value inside single quotes of a visibility query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def runs_query(journey: str | None = None, contact: str | None = None, *,
               running_only: bool = True) -> str:
    parts = [f"WorkflowType = '{WORKFLOW_NAME}'"]
    if journey is not None:
        parts.append(f"{search_attributes.JOURNEY.name} = '{quoted(journey)}'")
    if contact is not None:
        parts.append(f"{search_attributes.CONTACT.name} = '{quoted(contact)}'")
    if running_only:
        parts.append("ExecutionStatus = 'Running'")
    return " AND ".join(parts)


def encode_token(token: bytes | None) -> str | None:
    return base64.urlsafe_b64encode(token).decode() if token else None


def decode_token(token: str | None) -> bytes | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError) as error:
        raise PageTokenError(f"not a page token: {token!r} (use the one the last page printed)"
                             ) from error


def _row(execution: WorkflowExecution) -> RunRow:
    attributes = execution.typed_search_attributes
    status = execution.status.name.lower() if execution.status is not None else "?"
    return RunRow(
        workflow_id=execution.id,
        journey=attributes.get(search_attributes.JOURNEY),
        version=attributes.get(search_attributes.VERSION),
        contact=attributes.get(search_attributes.CONTACT),
        step=attributes.get(search_attributes.STEP),
        started_at=execution.start_time,
        status=status,
    )


async def list_runs(
    client: Client, *, journey: str | None = None, contact: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE, page_token: str | None = None,
    running_only: bool = True,
) -> RunPage:
    """One page of journey runs from visibility (newest first), and the token of the next."""
    listing = client.list_workflows(
        runs_query(journey, contact, running_only=running_only), page_size=page_size,
        next_page_token=decode_token(page_token),
    )
    await listing.fetch_next_page()
    rows = [_row(execution) for execution in listing.current_page or []]
    return RunPage(rows, encode_token(listing.next_page_token))


async def count_runs(client: Client, journey: str | None = None) -> int:
    return (await client.count_workflows(runs_query(journey))).count


async def step_counts(client: Client, journey_key: str,
                      steps: Iterable[str] | None = None) -> Counter[str]:
    """Running runs of a journey per current step (CairnStep).

    With the definition's `steps`: one count of the journey's running runs, then (only when
    some run) one count per step, asked at the same time (at most `COUNTS_AT_ONCE`), plus the
    runs in a step not named there (an older version's) as `?`; never a listing of the runs
    (Temporal groups counts by ExecutionStatus only). Without them, the running runs are listed
    and counted.
    """
    base = runs_query(journey_key)
    counts: Counter[str] = Counter()
    if steps is None:
        async for execution in client.list_workflows(base):
            counts[execution.typed_search_attributes.get(search_attributes.STEP) or "?"] += 1
        return counts
    running = (await client.count_workflows(base)).count
    if not running:
        return counts
    gate = asyncio.Semaphore(COUNTS_AT_ONCE)

    async def count(step: str) -> int:
        async with gate:
            return (await client.count_workflows(
                f"{base} AND {search_attributes.STEP.name} = '{quoted(step)}'")).count

    named = list(dict.fromkeys(steps))
    for step, found in zip(named, await asyncio.gather(*(count(s) for s in named)), strict=True):
        if found:
            counts[step] = found
    elsewhere = running - sum(counts.values())
    if elsewhere > 0:
        counts["?"] = elsewhere
    return counts


async def run_detail(client: Client, workflow_id: str) -> JourneyStateView | None:
    """The run's `state` query; None when no worker answers it in time."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.query(STATE_QUERY, result_type=JourneyStateView,
                                  rpc_timeout=QUERY_TIMEOUT)
    except RPCError:
        return None


async def describe_run(client: Client, workflow_id: str) -> RunRow | None:
    """The run as visibility describes it; None when Temporal has no such run."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return None
    return _row(description)
