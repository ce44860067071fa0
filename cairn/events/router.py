"""The event router: which journeys an event starts, and which running journeys must hear it.

For every published journey whose trigger matches an event, the router applies the journey's entry
rules and signal-with-starts the workflow `journey/<key>/<contact>[/<entry key>]`; for every
published journey that listens to the event's name (a wait for it, an exit goal on it) it signals
the contact's running entries. It decides from the event's own timestamp (not the wall clock), so a
simulation and a replayed backlog route exactly as live traffic would.

The router does not store events (that is `cairn.events.ingest`) and does not interpret journeys
(that is the workflow); what it writes is the entries table, one row per entry that started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, delete, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from cairn import metrics, search_attributes
from cairn.conditions import evaluate_event_filter, event_field
from cairn.durations import parse_duration
from cairn.group_commit import GroupCommit
from cairn.journey import Journey
from cairn.journey_run import (
    EVENT_SIGNAL,
    JOURNEY_TASK_QUEUE,
    WORKFLOW_NAME,
    EventMessage,
    JourneyInput,
    event_matches,
    workflow_id,
)
from cairn.log import get_logger
from cairn.privacy.codec import codec_keys
from cairn.privacy.keys import DataKeys, WrappedKey, contact_owner
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Entry

log = get_logger(__name__)

Action = Literal["started", "signalled", "refused"]

TRIGGER_MEMO = "cairn_trigger"
"""Memo key holding the message id of the event that started a run (how the router tells a run it
started from one it merely signalled)."""


@dataclass
class RouteDecision:
    """What the router did with an event for one journey, and why (logs and simulations show it)."""

    journey: str
    version: int | None
    workflow_id: str | None
    action: Action
    reason: str


_PENDING_TWINS: ContextVar[list[tuple[str, str]] | None] = ContextVar(
    "cairn_pending_twins", default=None)
"""(workflow id, message id) of the entries a routing call started, when the call drops their
twins itself, in the write that closes it (`Router.dropping_twins_later`)."""


async def drop_twins(session: AsyncSession, started: Iterable[tuple[str, str]]) -> None:
    """Keep one entry row per (workflow id, trigger message id): the oldest (see
    `Router._drop_twins`); one DELETE for up to `TWINS_PER_STATEMENT` entries, in the caller's
    transaction."""
    pairs = list(dict.fromkeys(started))
    for start in range(0, len(pairs), TWINS_PER_STATEMENT):
        chunk = pairs[start:start + TWINS_PER_STATEMENT]
        # A failed entry re-entered with the same event is history, not a twin.
        first = aliased(Entry)
        oldest = (select(func.min(first.id))
                  .where(first.workflow_id == Entry.workflow_id,
                         first.trigger_message_id == Entry.trigger_message_id,
                         _not_failed(first))
                  .scalar_subquery())
        await session.execute(
            delete(Entry)
            .where(tuple_(Entry.workflow_id, Entry.trigger_message_id).in_(chunk),
                   _not_failed(Entry), Entry.id > oldest)
            .execution_options(synchronize_session=False))


def _fresh(entry: Entry) -> Entry:
    """A new row with an entry's values (the one a failed transaction added is spent)."""
    return Entry(journey_key=entry.journey_key, version=entry.version,
                 contact_id=entry.contact_id, entry_key=entry.entry_key,
                 workflow_id=entry.workflow_id, trigger_message_id=entry.trigger_message_id,
                 entered_at=entry.entered_at)


ENDING_RUN_WAIT = timedelta(seconds=2)
"""How long a trigger that found a contact's entry closed but its run still there waits for that
run to complete before it gives up entering (the event then only signalled the run)."""

TWINS_PER_STATEMENT = 400
"""Entries whose twins one DELETE drops (two parameters each, far below SQLite's limit)."""


def _not_failed(entry: type[Entry]) -> ColumnElement[bool]:
    return or_(entry.outcome.is_(None), entry.outcome.not_like(f"{entries_repo.FAILED}%"))


_CALL_CATALOG: ContextVar[tuple[Router, PublishedCatalog] | None] = ContextVar(
    "cairn_call_catalog", default=None)
"""The catalog `Router.routing_by` holds for the routing call in progress, with its router."""


@dataclass(frozen=True)
class PublishedCatalog:
    """The published journeys (by key) and, per event name, those it triggers or they hear."""

    versions: tuple[int, ...]
    """Ids of the published version rows: the catalog is rebuilt when they change."""
    journeys: tuple[Journey, ...]
    triggered_by: dict[str, tuple[Journey, ...]]
    listening_to: dict[str, tuple[Journey, ...]]

    @classmethod
    def of(cls, versions: tuple[int, ...], journeys: list[Journey]) -> PublishedCatalog:
        triggered: dict[str, list[Journey]] = {}
        listening: dict[str, list[Journey]] = {}
        for journey in journeys:
            triggered.setdefault(journey.trigger.event_name, []).append(journey)
            for name in sorted(journey.listens_to()):
                listening.setdefault(name, []).append(journey)
        return cls(versions, tuple(journeys),
                   {name: tuple(found) for name, found in triggered.items()},
                   {name: tuple(found) for name, found in listening.items()})


class Router:
    """Routes events to journeys on Temporal, applying entry rules from the entries table.

    `clock_offset` is handed to the runs it starts (simulations start their clock at a scenario's
    `now`); `delivery_task_queue` likewise, when sends must go to another queue than the default.
    Loaded journey definitions are cached per (key, version): a published version never changes.
    """

    def __init__(
        self,
        client: Client,
        store: Store,
        *,
        task_queue: str = JOURNEY_TASK_QUEUE,
        clock_offset: timedelta = timedelta(0),
        delivery_task_queue: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.task_queue = task_queue
        self.clock_offset = clock_offset
        self.delivery_task_queue = delivery_task_queue
        self._journeys: dict[tuple[str, int], Journey] = {}
        self._catalog: PublishedCatalog | None = None
        self._arriving_entries: GroupCommit[Entry, int] = GroupCommit(
            lambda rows: self._write_entry_rows(rows), self._write_entry_alone,
            name="cairn-entries")

    # ------------------------------------------------------------------ the public entry point

    async def route(self, event: EventMessage) -> list[RouteDecision]:
        """Start or signal every journey the event concerns; one decision per journey concerned.

        A journey whose trigger matches gets a decision (started, signalled or refused with the
        entry rule that refused it). A journey that listens to the event gets one decision per
        entry it signalled, except the entry the trigger part already delivered the event to.

        Temporal errors other than "workflow not found" propagate: the caller keeps the event
        unrouted, and routing it again is safe (entries are keyed by the trigger's message id and
        journeys ignore message ids they have seen).

        Inside `routing_by(catalog)` it routes by that catalog instead of reading it again.
        """
        bound = log.bind(event_name=event.event, message_id=event.message_id,
                         contact=event.contact_id)
        held = _CALL_CATALOG.get()
        catalog = held[1] if held is not None and held[0] is self else await self.catalog()
        decisions: list[RouteDecision] = []
        delivered: set[str] = set()
        for journey in catalog.triggered_by.get(event.event, ()):
            if journey.trigger.admits(journey.key, event.properties)[0]:
                decision = await self._trigger(journey, event)
                decisions.append(decision)
                if decision.action != "refused" and decision.workflow_id:
                    delivered.add(decision.workflow_id)
        for journey in catalog.listening_to.get(event.event, ()):
            decisions.extend(await self._signal_entries(journey, event, skip=delivered))
        for decision in decisions:
            bound.info(
                "route.decision",
                journey=decision.journey,
                version=decision.version,
                workflow_id=decision.workflow_id,
                action=decision.action,
                reason=decision.reason,
            )
        return decisions

    async def published_journeys(self) -> list[Journey]:
        """The latest published version of every journey, validated once per (key, version)."""
        return list((await self.catalog()).journeys)

    @contextlib.contextmanager
    def routing_by(self, catalog: PublishedCatalog) -> Iterator[None]:
        """Route by `catalog` within the block (and the tasks it starts): a caller routing many
        events at once reads the catalog once for all of them."""
        token = _CALL_CATALOG.set((self, catalog))
        try:
            yield
        finally:
            _CALL_CATALOG.reset(token)

    @staticmethod
    @contextlib.contextmanager
    def dropping_twins_later(pending: list[tuple[str, str]]) -> Iterator[None]:
        """Within the block, the entries the router starts are added to `pending` instead of
        having their twins dropped at once: the caller drops them (`drop_twins`) in a write of
        its own that follows, saving a transaction per entry (`Ingest.route_events` does it in
        the write that marks the events routed)."""
        token = _PENDING_TWINS.set(pending)
        try:
            yield
        finally:
            _PENDING_TWINS.reset(token)

    async def catalog(self) -> PublishedCatalog:
        """The published journeys, indexed by the events that trigger them and that they hear.

        One small query per call tells which versions are published (`cairn publish` may run in
        another process); the definitions are loaded and the index rebuilt only when that
        answer changes.
        """
        async with self.store.session() as session:
            published = await journeys_repo.published_ids(session)
            if self._catalog is not None and self._catalog.versions == published:
                return self._catalog
            rows = await journeys_repo.published(session)
        journeys = []
        for row in rows:
            cached = self._journeys.get((row.key, row.version))
            if cached is None:
                cached = journeys_repo.journey_of(row)
                self._journeys[(row.key, row.version)] = cached
            journeys.append(cached)
        self._catalog = PublishedCatalog.of(tuple(row.id for row in rows), journeys)
        return self._catalog

    async def enter_journey(self, journey_key: str, event: EventMessage) -> RouteDecision | None:
        """Route `event` as a trigger of one published journey only (an operator re-entering a
        failed entry); entry rules apply. None when the journey is not published."""
        for journey in await self.published_journeys():
            if journey.key == journey_key:
                return await self._trigger(journey, event)
        return None

    # ------------------------------------------------------------------ triggers and entry rules

    async def _trigger(self, journey: Journey, event: EventMessage) -> RouteDecision:
        """Apply the trigger filter and the entry rules, then enter (or signal) the contact."""
        scope = event.as_scope()

        def refuse(reason: str, wid: str | None = None) -> RouteDecision:
            return RouteDecision(journey.key, journey.version, wid, "refused", reason)

        if journey.trigger.where is not None:
            verdict = evaluate_event_filter(journey.trigger.where, scope, event.timestamp)
            if not verdict.result:
                return refuse(f"trigger.where: {verdict.reason}")

        rules = journey.entry
        entry_key: str | None = None
        if rules.reentry == "concurrent":
            assert rules.key_by is not None  # EntryRules guarantees it
            value = event_field(scope, rules.key_by)
            usable = isinstance(value, str | int | float) and not isinstance(value, bool)
            if not usable or not str(value).strip():
                return refuse(
                    f"entry: concurrent, the event has no usable {rules.key_by} to key the entry by"
                )
            entry_key = str(value)
        wid = workflow_id(journey.key, event.contact_id, entry_key)

        async with self.store.session() as session:
            history = await entries_repo.entries_for(session, journey.key, event.contact_id)
        # A failed run's entry does not count: a broken run must not lock the contact out.
        history = [e for e in history if entries_repo.counts_for_entry_rules(e)]
        earlier = [e for e in history
                   if e.workflow_id == wid and e.trigger_message_id == event.message_id]
        if earlier:
            return await self._enter_again(journey, event, entry_key, wid, earlier[-1])
        if rules.reentry == "never" and history:
            first = min(history, key=lambda e: e.entered_at)
            return refuse(f"entry: never, entered at {_iso(first.entered_at)}", wid)

        running = [e for e in history if e.workflow_id == wid and e.ended_at is None]
        if not running and rules.min_interval and history:
            last = max(history, key=lambda e: e.entered_at)
            interval = parse_duration(rules.min_interval)
            if event.timestamp - _aware(last.entered_at) < interval:
                return refuse(
                    f"entry: min_interval {rules.min_interval}, last entered at "
                    f"{_iso(last.entered_at)}",
                    wid,
                )
        return await self._enter(journey, event, entry_key, wid,
                                 running=[e.version for e in running])

    async def _enter(
        self,
        journey: Journey,
        event: EventMessage,
        entry_key: str | None,
        wid: str,
        *,
        running: list[int],
        again: bool = False,
    ) -> RouteDecision:
        """Signal-with-start the entry's workflow; keep the entry row only if a new run started.

        Why record first, then reconcile: a journey without waits can finish (and close its entry
        through the `finish_entry` activity) before the start call even returns, so a row written
        after the start would stay open forever. The row is written before the start call, and
        removed again when the call merely signalled a run that was already there (`after_exit`
        with an open entry: signal-with-start delivers the event to it natively) or failed.

        Why the memo: signal-with-start's `started` flag is not reported by every server (the
        time-skipping test server leaves it unset), so each run carries the message id of the event
        that started it in its memo, and the router reads it back from the run it reached. That
        answer is exact even when two routers race on the same workflow id.

        Why `again`: a run closes its entry just before it completes (its last send closes it
        with the ledger row, `SendRequest.closes_entry`), so a trigger can find no open entry
        while the run is still there for a moment; the call then only signals that ending run.
        The router waits for it to end (at most `ENDING_RUN_WAIT`) and enters the contact
        again, once: the event starts the next run, as the entry rules said.
        """
        assert journey.version is not None, "only published journeys (with a version) are routed"
        entry_id = await self._record_together(Entry(
            journey_key=journey.key,
            version=journey.version,
            contact_id=event.contact_id,
            entry_key=entry_key,
            workflow_id=wid,
            trigger_message_id=event.message_id,
            entered_at=event.timestamp,
        ))
        try:
            handle = await self._signal_with_start(journey, event, entry_key, wid, running)
            started = await self._started_by(handle, event)
        except BaseException:
            await self._discard_entry(entry_id)
            raise
        if started:
            pending = _PENDING_TWINS.get()
            if pending is not None:  # dropped in the routing call's closing write
                pending.append((wid, event.message_id))
            else:
                await self._drop_twins(wid, event.message_id)
            metrics.ENTRIES.labels(journey=journey.key).inc()
            return RouteDecision(journey.key, journey.version, wid, "started",
                                 _entered_reason(journey))
        await self._discard_entry(entry_id)
        if not running and not again and await self._ended_soon(handle):
            return await self._enter(journey, event, entry_key, wid, running=[], again=True)
        reason = (
            f"entry: {journey.entry.reentry}, already in the journey; event signalled"
            if running else "a run was already there; event signalled"
        )
        return RouteDecision(journey.key, journey.version, wid, "signalled", reason)

    async def _record_together(self, entry: Entry) -> int:
        """Record an entry in the transaction of the entries other routing lanes record
        meanwhile (`cairn.group_commit`), with the data key of each contact (`_staging_keys`);
        returns its id once committed. A routing pass routes many contacts side by side
        (`Ingest.route_events`), and on SQLite each write transaction queues behind the others.
        Should the shared transaction fail, each entry is written again on its own."""
        return await self._arriving_entries.submit(entry)

    async def _write_entry_alone(self, entry: Entry) -> int:
        return (await self._write_entry_rows([_fresh(entry)]))[0]

    async def _write_entry_rows(self, rows: list[Entry]) -> list[int]:
        keys = self._staging_keys()
        staged: list[WrappedKey] = []
        async with self.store.session() as session, session.begin():
            session.add_all(rows)
            await session.flush()
            if keys is not None:  # the runs' payloads are encrypted under their contact's key
                for contact in dict.fromkeys(row.contact_id for row in rows):
                    key = await keys.stage(session, contact_owner(contact))
                    if key is not None:
                        staged.append(key)
        if keys is not None:
            for key in staged:
                keys.adopt(key)
        return [row.id for row in rows]

    def _staging_keys(self) -> DataKeys | None:
        """The payload codec's data keys, when they are kept in this router's database: the
        contact's key is then found or created in the transaction that records the entry,
        rather than in one of its own when the start call encodes the run's input."""
        keys = codec_keys(self.client.data_converter)
        return keys if keys is not None and keys.stages_in(self.store.url) else None

    async def _enter_again(
        self, journey: Journey, event: EventMessage, entry_key: str | None, wid: str,
        row: Entry,
    ) -> RouteDecision:
        """The event was routed before (a retry by the relay after a crash or an outage).

        A closed row means its run came and went: nothing to do. An open row means the run is
        there, or the router died between recording the row and starting the run; signal-with-
        start covers both (the run ignores a message id it has seen), so the entry is never lost.
        """
        if row.ended_at is not None:
            return RouteDecision(journey.key, journey.version, wid, "started",
                                 "already entered with this event")
        handle = await self._signal_with_start(journey, event, entry_key, wid, [row.version])
        if await self._started_by(handle, event):
            return RouteDecision(journey.key, journey.version, wid, "started",
                                 "already entered with this event")
        return RouteDecision(journey.key, journey.version, wid, "signalled",
                             "routed again; the event went to the run now in place")

    async def _signal_with_start(
        self, journey: Journey, event: EventMessage, entry_key: str | None, wid: str,
        running: list[int],
    ) -> WorkflowHandle[object, object]:
        """Start the entry's run with the event's reference (or signal the run already there,
        whose version `running` names: the reference says which filters it meets in either)."""
        reference = await self._reference(journey, event, [journey.version, *running])
        attributes = TypedSearchAttributes([
            SearchAttributePair(search_attributes.JOURNEY, journey.key),
            SearchAttributePair(search_attributes.CONTACT, event.contact_id),
            SearchAttributePair(search_attributes.VERSION, journey.version or 0),
            SearchAttributePair(search_attributes.STEP, journey.first_step),
        ])
        run_input = JourneyInput(
            journey=journey,
            contact_id=event.contact_id,
            entry_key=entry_key,
            trigger=reference,
            clock_offset_seconds=self.clock_offset.total_seconds(),
            delivery_task_queue=self.delivery_task_queue,
            lean=True,
            entry_by_send=True,
        )
        handle: WorkflowHandle[object, object] = await self.client.start_workflow(
            WORKFLOW_NAME,
            run_input,
            id=wid,
            task_queue=self.task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[reference],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=attributes,
            memo={TRIGGER_MEMO: event.message_id},
            static_summary=f"{journey.name} for {event.contact_id}",
        )
        return handle

    async def _reference(
        self, journey: Journey, event: EventMessage, versions: Iterable[int | None],
    ) -> EventMessage:
        """The event as the journey's runs of these versions get it: no properties, and the
        filters (waits, exit goals) it meets decided here, on the definition of each version."""
        matches: list[str] = []
        for version in dict.fromkeys(v for v in versions if v is not None):
            definition = await self._definition(journey, version)
            if definition is not None:
                matches += event_matches(definition, event)
        return event.reference(matches)

    async def _definition(self, journey: Journey, version: int) -> Journey | None:
        """Version `version` of the journey (the run's definition travels with the run; the
        entries table says which one it is)."""
        if journey.version == version:
            return journey
        cached = self._journeys.get((journey.key, version))
        if cached is None:
            async with self.store.session() as session:
                row = await journeys_repo.get_version(session, journey.key, version)
            if row is None:
                return None
            cached = journeys_repo.journey_of(row)
            self._journeys[(journey.key, version)] = cached
        return cached

    async def _started_by(
        self, handle: WorkflowHandle[object, object], event: EventMessage
    ) -> bool:
        """Whether the run signal-with-start reached was started by this event (see `_enter`).

        A server that reports `started` is trusted: true means this call started the run, which
        is exact even when two routers race. Only an answer of false is checked against the
        run's memo, since some servers (the time-skipping test server) never set the flag; a
        describe per started run would cost a round trip and a history read each entry.
        """
        response = getattr(handle, "_start_workflow_response", None)
        if getattr(response, "started", False):
            return True
        run = self.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        description = await run.describe()
        memo = await description.memo()
        return bool(memo.get(TRIGGER_MEMO) == event.message_id)

    async def _ended_soon(self, handle: WorkflowHandle[object, object]) -> bool:
        """Whether the run a signal-with-start reached ends within `ENDING_RUN_WAIT`."""
        run = self.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        try:
            await asyncio.wait_for(run.result(follow_runs=False), ENDING_RUN_WAIT.total_seconds())
        except TimeoutError:
            return False
        except WorkflowFailureError:
            return True  # it ended (failed, terminated, timed out)
        except RPCError:
            return False
        return True

    async def _drop_twins(self, wid: str, message_id: str) -> None:
        """Keep one entry row for the run this event started. Two routers can route the same
        event at once (a claim that lapsed under load, taken by the relay of another process):
        both record a row before either sees the other's, and both read back the run's memo
        as theirs. Each keeps the oldest row, so they agree."""
        async with self.store.session() as session, session.begin():
            await drop_twins(session, [(wid, message_id)])

    async def _discard_entry(self, entry_id: int) -> None:
        """Remove a provisional entry row: no run started for it."""
        async with self.store.session() as session, session.begin():
            await session.execute(delete(Entry).where(Entry.id == entry_id))

    # ------------------------------------------------------------------ listening journeys

    async def _signal_entries(
        self, journey: Journey, event: EventMessage, *, skip: set[str]
    ) -> list[RouteDecision]:
        """Signal the event to the contact's running entries of a journey that listens to it.

        The entries table names the entries; for journeys with one entry per contact the plain
        workflow id is tried as well, in case a run exists that the table does not show (a run
        started by hand or by another Cairn). A run that is gone is not an error.
        """
        async with self.store.session() as session:
            open_rows = await entries_repo.open_entries(session, journey.key, event.contact_id)
        versions = {row.workflow_id: row.version for row in open_rows}
        targets = _unique(row.workflow_id for row in open_rows)
        if journey.entry.reentry != "concurrent":
            targets = _unique([*targets, workflow_id(journey.key, event.contact_id)])
        decisions = []
        for wid in targets:
            if wid in skip:
                continue
            reference = await self._reference(journey, event, [versions.get(wid, journey.version)])
            try:
                await self.client.get_workflow_handle(wid).signal(EVENT_SIGNAL, reference)
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                decisions.append(RouteDecision(journey.key, journey.version, wid, "refused",
                                               "no running entry"))
                continue
            decisions.append(RouteDecision(journey.key, journey.version, wid, "signalled",
                                           f"the journey listens to {event.event}"))
        return decisions


def _entered_reason(journey: Journey) -> str:
    rule = journey.entry.reentry
    return f"trigger {journey.trigger.describe()} matched; entry: {rule}, new entry"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _aware(moment: datetime) -> datetime:
    """A moment as aware UTC; the store writes UTC, so a naive value read back is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return _aware(moment).isoformat().replace("+00:00", "Z")
