"""What Cairn's interpreter costs over a hand-written Temporal workflow doing the same thing.

Both sides run against one `temporal server start-dev` (started here, SQLite file in a temporary
folder), one SQLite store and workers in this process:

* **cairn**: a journey `trigger bench_go -> wait 1s -> if plan = pro -> send email -> end`, entered
  the way `POST /v1/track` enters it: `Ingest.track(route=False)` stores the event and touches the
  contact in the commit of the calls arriving with it, then `Ingest.route_soon` routes it with the
  events of the other calls (claimed and marked routed in one write per pass; the router applies
  entry rules, records the entry and signal-with-starts the run); the real interpreter and
  activities (condition read from the store, send prepared, rendered and written to the
  deliveries ledger on `cairn-delivery`). `--inline-routing` routes each call on its own
  instead (`Ingest.track(route=True)`, as `POST /v1/journeys/{key}/entries` does).
* **minimal**: a hand-written workflow started with `start_workflow`: a sleep until 1 s after the
  start call's time, to the second (the journey's wait counts from its event the same way, so
  under load neither side starts a timer for a moment already past), one activity that reads the
  contact from the same store and checks the plan, one activity on a delivery queue that writes
  the ledger row.

For each it prints completed runs per second (N runs started together, until the last one ends),
and event-to-first-send latency p50 / p99: from the call that starts the run (the track call, or
`start_workflow`) to the commit of the delivery row. Then, per run, what each side costs:

* from the runs' histories (a sample of the loaded runs): history events, workflow tasks,
  activities (regular and local), search-attribute upserts, timers, signals, payload bytes (the
  `data` of every payload in the history: inputs, results, signals, markers, memo, search
  attributes), and Temporal billable actions counted the way Temporal Cloud bills them: the
  workflow start, each signal (signal-with-start: a start and a signal), each activity attempt
  started, each local activity (its marker), each timer started and each search-attribute upsert;
  not counted: workflow tasks, patch (version) markers, completions;
* from the store's engines (every statement the process ran during the loaded phase, the
  cairn side's ingest and routing included, and the payload codec's data-key reads and writes):
  SQL statements, commits, and new database connections opened (`--statements` lists each
  side's statements per run by text).

It prints figures; it asserts nothing.

    python benchmarks/engine_overhead.py --runs 200
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow

# The workflow sandbox re-imports this file for every run; what it needs from outside is passed
# through, so the hand-written side pays for its own workflow code only, as Cairn's does.
with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import collections
    import os
    import statistics
    import sys
    import tempfile
    import time
    import uuid
    from pathlib import Path

    from google.protobuf.message import Message
    from sqlalchemy import event as orm_event
    from sqlalchemy.engine import Engine
    from temporalio.api.common.v1 import Payload
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client
    from temporalio.worker import Worker

    from cairn.catalog import publish_catalog
    from cairn.events.calls import TrackCall
    from cairn.events.ingest import Ingest
    from cairn.events.router import Router
    from cairn.journey_run import JourneyResult, workflow_id
    from cairn.log import configure
    from cairn.settings import Settings
    from cairn.store import contacts, deliveries
    from cairn.store.db import Store
    from cairn.store.schema import Delivery
    from starter.dev import DevServer, free_port
    from starter.worker import STORE_POOL_SIZE, journey_workers, running, workflow_runner

BENCH_JOURNEY = """\
key: bench
name: Engine overhead benchmark
trigger: {event: bench_go}
steps:
  pause: {wait: 1s, next: check}
  check:
    if: {attribute: plan, eq: pro}
    then: hello
    else: end
  hello:
    send: {channel: email, template: bench-hello, category: transactional}
    next: end
"""

BENCH_TEMPLATE = """\
email:
  subject: "Hello {{ contact.first_name | default: 'there' }}"
  body: "Your plan is {{ contact.plan }}."
"""


# --------------------------------------------------------------------------- the minimal workflow


@dataclass
class MinimalStart:
    contact_id: str
    at: datetime
    """When the run was asked for (the event's time, as Cairn's trigger carries it)."""


@dataclass
class MinimalSend:
    workflow_id: str
    contact_id: str


class MinimalActivities:
    """The hand-written side's activities: same store, same ledger, no interpreter around them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="minimal_check_plan")
    async def check_plan(self, contact_id: str) -> bool:
        async with self.store.session() as session:
            contact = await contacts.get_contact(session, contact_id)
        return contact is not None and (contact.attributes or {}).get("plan") == "pro"

    @activity.defn(name="minimal_send")
    async def send(self, request: MinimalSend) -> int:
        async with self.store.session() as session, session.begin():
            contact = await contacts.get_contact(session, request.contact_id)
            assert contact is not None
            now = datetime.now(UTC)
            row, _ = await deliveries.record_delivery(
                session,
                idempotency_key=f"{request.workflow_id}/hello/1",
                kind="send",
                workflow_id=request.workflow_id,
                journey_key="minimal",
                step="hello",
                contact_id=request.contact_id,
                channel="email",
                provider="outbox",
                template="bench-hello",
                category="transactional",
                status="sent",
                rendered={"subject": "Hello",
                          "body": f"Your plan is {contact.attributes['plan']}."},
                created_at=now,
                sent_at=now,
            )
            await session.flush()
            return row.id


@workflow.defn(name="MinimalJourney")
class MinimalJourney:
    """trigger -> wait 1s -> if plan = pro -> send, written by hand."""

    @workflow.run
    async def run(self, start: MinimalStart) -> str:
        # Like the journey's wait: 1 s counted from the event, to the second; a run that starts
        # later than that (under load) finds it over and starts no timer.
        contact_id = start.contact_id
        remaining = start.at.replace(microsecond=0) + timedelta(seconds=1) - workflow.now()
        if remaining > timedelta(0):
            await workflow.sleep(remaining)
        is_pro = await workflow.execute_activity(
            "minimal_check_plan", contact_id, result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
        )
        if not is_pro:
            return "completed"
        await workflow.execute_activity(
            "minimal_send", MinimalSend(workflow.info().workflow_id, contact_id),
            task_queue=MINIMAL_DELIVERY_QUEUE, start_to_close_timeout=timedelta(seconds=30),
        )
        return "completed"


MINIMAL_QUEUE = "bench-minimal"
MINIMAL_DELIVERY_QUEUE = "bench-minimal-delivery"


# --------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    name: str
    runs: int
    seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.runs / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        if len(ordered) == 1:
            return ordered[0]
        return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1]


class SendClock:
    """Wall-clock moment each delivery row was committed, by contact (an ORM after-insert hook)."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}

    def install(self) -> None:
        orm_event.listen(Delivery, "after_insert", self._inserted)

    def _inserted(self, mapper: object, connection: object, row: Delivery) -> None:
        if row.contact_id and row.kind == "send":
            self.sent_at.setdefault(row.contact_id, time.monotonic())


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process (its own threads), from /proc; 0 where there is none."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StoreCounter:
    """Statements, commits and new connections on the store's engine (SQLAlchemy events)."""

    def __init__(self, store: Store, *, by_text: bool = False) -> None:
        self.statements = self.commits = self.connections = 0
        self.by_text = by_text
        """Keep each statement's text too (`--statements`): costs both sides a little CPU."""
        self.counting: str | None = None
        """The side whose loaded phase is running (its statements are kept by text)."""
        self.texts: dict[str, collections.Counter[str]] = {}
        engine = store.engine.sync_engine
        # Every engine of the process: the store's, and the one the payload codec opens for
        # its data keys (`cairn.privacy.keys.SqlDataKeyStore`, on the same database).
        orm_event.listen(Engine, "before_cursor_execute", self._statement)
        orm_event.listen(Engine, "commit", self._commit)
        orm_event.listen(engine.pool, "connect", self._connect)

    def _statement(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        self.statements += 1
        if self.counting is not None and self.by_text:
            text = " ".join(statement.split())[:110]
            self.texts.setdefault(self.counting, collections.Counter())[text] += 1

    def _commit(self, *_: object) -> None:
        self.commits += 1

    def _connect(self, *_: object) -> None:
        self.connections += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.commits, self.connections


@dataclass
class RunCost:
    """Per-run figures from histories, and from the store over the loaded phase."""

    histories: int = 0
    events: float = 0
    workflow_tasks: float = 0
    activities: float = 0
    local_activities: float = 0
    upserts: float = 0
    timers: float = 0
    signals: float = 0
    markers: float = 0
    payload_bytes: float = 0
    actions: float = 0
    statements: float = 0
    commits: float = 0
    connections: float = 0
    worker_cpu_ms: float = 0
    server_cpu_ms: float = 0


LOCAL_ACTIVITY_MARKER = "core_local_activity"


def payload_bytes(message: object) -> int:
    """The `data` bytes of every payload inside a protobuf message."""
    if isinstance(message, Payload):
        return len(message.data)
    total = 0
    for descriptor, value in message.ListFields():  # type: ignore[attr-defined]
        if descriptor.message_type is None:
            continue
        if isinstance(value, Message):
            total += payload_bytes(value)
        elif descriptor.message_type.GetOptions().map_entry:
            total += sum(payload_bytes(item) for item in value.values())
        else:
            total += sum(payload_bytes(item) for item in value)
    return total


async def history_cost(client: Client, workflow_ids: list[str], cost: RunCost) -> None:
    """Add the histories' figures (every run of each workflow id, continue-as-new included)."""
    for wid in workflow_ids:
        history = await client.get_workflow_handle(wid).fetch_history()
        cost.histories += 1
        for event in history.events:
            cost.events += 1
            cost.payload_bytes += payload_bytes(event)
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                cost.actions += 1
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                cost.workflow_tasks += 1
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                cost.activities += 1
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                cost.actions += event.activity_task_started_event_attributes.attempt
            elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
                cost.upserts += 1
                cost.actions += 1
            elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
                cost.timers += 1
                cost.actions += 1
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                cost.signals += 1
                cost.actions += 1
            elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
                if event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
                    cost.local_activities += 1
                    cost.actions += 1
                else:
                    cost.markers += 1


def per_run(cost: RunCost, runs: int, store_delta: tuple[int, int, int],
            cpu: tuple[float, float]) -> RunCost:
    n = max(cost.histories, 1)
    return RunCost(
        histories=cost.histories,
        events=cost.events / n, workflow_tasks=cost.workflow_tasks / n,
        activities=cost.activities / n, local_activities=cost.local_activities / n,
        upserts=cost.upserts / n, timers=cost.timers / n, signals=cost.signals / n,
        markers=cost.markers / n, payload_bytes=cost.payload_bytes / n,
        actions=cost.actions / n,
        statements=store_delta[0] / runs, commits=store_delta[1] / runs,
        connections=store_delta[2] / runs,
        worker_cpu_ms=cpu[0] * 1000 / runs, server_cpu_ms=cpu[1] * 1000 / runs,
    )


async def seed_contacts(store: Store, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    now = datetime.now(UTC)
    async with store.session() as session, session.begin():
        for contact_id in ids:
            await contacts.identify(session, contact_id, {
                "email": f"{contact_id}@example.com", "first_name": "Ana", "plan": "pro",
                "consent": {"marketing": True},
            }, now)
    return ids


class CairnSide:
    """The journey above, entered through ingest and the router, run by Cairn's workers."""

    name = "cairn"
    queue, delivery_queue = "bench-cairn", "bench-cairn-delivery"

    def __init__(self, client: Client, store: Store, *, inline_routing: bool = False) -> None:
        self.client = client
        self.store = store
        self.inline_routing = inline_routing
        self.ingest = Ingest(store, Router(client, store, task_queue=self.queue,
                                           delivery_task_queue=self.delivery_queue))

    async def publish(self, folder: Path) -> None:
        (folder / "templates").mkdir(parents=True, exist_ok=True)
        (folder / "bench.yaml").write_text(BENCH_JOURNEY)
        (folder / "templates" / "bench-hello.yaml").write_text(BENCH_TEMPLATE)
        await publish_catalog(self.store, folder)

    def workers(self) -> list[Worker]:
        # As `cairn worker` runs them: the interpreter's modules shared by every run
        # (CAIRN_WORKER_STRICT_SANDBOX=true measures the per-run import instead).
        return journey_workers(self.client, self.store, journey_queue=self.queue,
                               delivery_queue=self.delivery_queue,
                               share_workflow_code=not Settings().worker_strict_sandbox)

    async def start(self, contact_id: str) -> None:
        call = TrackCall(user_id=contact_id, event="bench_go")
        if self.inline_routing:
            result = await self.ingest.track(call)
            assert result.routes and result.routes[0].action == "started", result.routes
            return
        # `POST /v1/track`: stored, answered, routed in the background (awaited here, so the
        # run exists when `finish` asks for it).
        result = await self.ingest.track(call, route=False)
        await self.ingest.route_soon([result.event_id])

    @staticmethod
    def workflow_id(contact_id: str) -> str:
        return workflow_id("bench", contact_id)

    async def finish(self, contact_id: str) -> None:
        handle = self.client.get_workflow_handle(workflow_id("bench", contact_id),
                                                 result_type=JourneyResult)
        outcome = await handle.result()
        assert outcome.outcome == "completed", outcome


class MinimalSide:
    """The hand-written workflow, started directly, with its two activities."""

    name = "minimal"

    def __init__(self, client: Client, store: Store) -> None:
        self.client = client
        self.activities = MinimalActivities(store)

    def workers(self) -> list[Worker]:
        return [
            Worker(self.client, task_queue=MINIMAL_QUEUE, workflows=[MinimalJourney],
                   activities=[self.activities.check_plan], workflow_runner=workflow_runner()),
            Worker(self.client, task_queue=MINIMAL_DELIVERY_QUEUE,
                   activities=[self.activities.send]),
        ]

    async def start(self, contact_id: str) -> None:
        await self.client.start_workflow(MinimalJourney.run,
                                         MinimalStart(contact_id, datetime.now(UTC)),
                                         id=f"minimal/{contact_id}", task_queue=MINIMAL_QUEUE)

    @staticmethod
    def workflow_id(contact_id: str) -> str:
        return f"minimal/{contact_id}"

    async def finish(self, contact_id: str) -> None:
        assert await self.client.get_workflow_handle(f"minimal/{contact_id}").result() == (
            "completed")


Side = CairnSide | MinimalSide


async def measure(side: Side, ids: list[str], clock: SendClock, *, concurrency: int) -> Figures:
    """Start the runs (`concurrency` starts at a time) and wait until every one has finished."""
    started: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(contact_id: str) -> None:
        async with gate:
            started[contact_id] = time.monotonic()
            await side.start(contact_id)
        await side.finish(contact_id)

    begin = time.monotonic()
    await asyncio.gather(*(one(contact_id) for contact_id in ids))
    seconds = time.monotonic() - begin
    return Figures(side.name, len(ids), seconds,
                   [clock.sent_at[c] - started[c] for c in ids if c in clock.sent_at])


async def measure_idle(side: Side, ids: list[str], clock: SendClock) -> Figures:
    """One run at a time: the latency of a journey when nothing else is going on."""
    latencies: list[float] = []
    begin = time.monotonic()
    for contact_id in ids:
        started = time.monotonic()
        await side.start(contact_id)
        await side.finish(contact_id)
        latencies.append(clock.sent_at[contact_id] - started)
    return Figures(side.name, len(ids), time.monotonic() - begin, latencies)


@dataclass
class SideFigures:
    loaded: Figures
    idle: Figures
    cost: RunCost


async def bench(sides: list[Side], store: Store, clock: SendClock, counter: StoreCounter, *,
                runs: int, concurrency: int, warmup: int, idle_runs: int, sample: int,
                rounds: int, server_pid: int | None) -> dict[str, SideFigures]:
    """Each side's figures. The loaded runs go in `rounds` rounds, the sides taking turns (and
    turns about who goes first), so a machine whose load changes during the benchmark weighs on
    both sides alike; each side's workers run only during its own turns, after `warmup` runs."""
    tags = {side.name: f"{side.name[0]}-{uuid.uuid4().hex[:6]}" for side in sides}
    idle: dict[str, Figures] = {}
    loaded: dict[str, list[Figures]] = {side.name: [] for side in sides}
    counted: dict[str, list[int]] = {side.name: [0, 0, 0] for side in sides}
    cpu: dict[str, list[float]] = {side.name: [0.0, 0.0] for side in sides}
    ids: dict[str, list[str]] = {side.name: [] for side in sides}
    per_round = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    for number, count in enumerate(per_round):
        order = sides if number % 2 == 0 else list(reversed(sides))
        for side in order:
            tag = f"{tags[side.name]}-{number}"
            async with running(side.workers()):
                if warmup:
                    await measure(side, await seed_contacts(store, f"{tag}-warm", warmup), clock,
                                  concurrency=concurrency)
                if number == 0:
                    idle[side.name] = await measure_idle(
                        side, await seed_contacts(store, f"{tag}-idle", idle_runs), clock)
                batch = await seed_contacts(store, f"{tag}-run", count)
                before = counter.snapshot()
                counter.counting = side.name
                cpu_before = (cpu_seconds(None), cpu_seconds(server_pid))
                loaded[side.name].append(await measure(side, batch, clock,
                                                       concurrency=concurrency))
                after = counter.snapshot()
                counter.counting = None
                cpu[side.name][0] += cpu_seconds(None) - cpu_before[0]
                cpu[side.name][1] += cpu_seconds(server_pid) - cpu_before[1]
            ids[side.name] += batch
            for index in range(3):
                counted[side.name][index] += after[index] - before[index]
    figures: dict[str, SideFigures] = {}
    for side in sides:
        parts = loaded[side.name]
        total = Figures(side.name, sum(p.runs for p in parts), sum(p.seconds for p in parts),
                        [latency for p in parts for latency in p.latencies])
        cost = RunCost()
        await history_cost(side.client, [side.workflow_id(c) for c in ids[side.name][:sample]],
                           cost)
        delta = (counted[side.name][0], counted[side.name][1], counted[side.name][2])
        used = (cpu[side.name][0], cpu[side.name][1])
        figures[side.name] = SideFigures(total, idle[side.name], per_run(cost, runs, delta, used))
    return figures


def report(cairn: SideFigures, minimal: SideFigures, concurrency: int, rounds: int) -> None:
    print()
    print(f"{runs_label(cairn.loaded.runs, concurrency)}, in {rounds} rounds, sides taking turns")
    print(f"{'':9} {'seconds':>8} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for figures in (cairn.loaded, minimal.loaded):
        print(f"{figures.name:9} {figures.seconds:>8.2f} {figures.throughput:>8.1f} "
              f"{figures.percentile(50) * 1000:>8.0f} {figures.percentile(99) * 1000:>8.0f}")
    ratio = cairn.loaded.throughput / minimal.loaded.throughput
    print(f"throughput ratio cairn / minimal: {ratio:.2f}")
    print()
    print(f"{cairn.idle.runs} runs one at a time (latency with nothing else running)")
    print(f"{'':9} {'p50 ms':>8} {'p99 ms':>8}")
    for figures in (cairn.idle, minimal.idle):
        print(f"{figures.name:9} {figures.percentile(50) * 1000:>8.0f} "
              f"{figures.percentile(99) * 1000:>8.0f}")
    print()
    print("latency: from the call that starts the run (track / start_workflow) to the insert of "
          "its delivery row; it includes the journey's 1 s wait")
    print()
    print(f"per run (histories of {cairn.cost.histories} loaded runs per side; store figures over "
          "the whole loaded phase)")
    print(f"{'':28} {'cairn':>9} {'minimal':>9}")
    rows = [
        ("history events", "events"), ("workflow tasks", "workflow_tasks"),
        ("activities", "activities"), ("local activities", "local_activities"),
        ("search-attribute upserts", "upserts"), ("timers", "timers"),
        ("signals", "signals"), ("patch markers", "markers"),
        ("payload bytes", "payload_bytes"), ("billable actions", "actions"),
        ("SQL statements", "statements"), ("SQL commits", "commits"),
        ("new DB connections", "connections"),
        ("CPU ms, this process", "worker_cpu_ms"), ("CPU ms, Temporal server", "server_cpu_ms"),
    ]
    for label, attribute in rows:
        print(f"{label:28} {getattr(cairn.cost, attribute):>9.1f} "
              f"{getattr(minimal.cost, attribute):>9.1f}")
    print("billable actions: workflow start, signals, activity attempts, local activities, "
          "timers, search-attribute upserts")
    print("CPU: this process (workers, ingest, router, store) and the Temporal dev server, "
          "during the loaded runs")
    cpu_cairn = cairn.cost.worker_cpu_ms + cairn.cost.server_cpu_ms
    cpu_minimal = minimal.cost.worker_cpu_ms + minimal.cost.server_cpu_ms
    if cpu_cairn:
        print(f"CPU per run, both processes: cairn {cpu_cairn:.0f} ms, minimal "
              f"{cpu_minimal:.0f} ms; ratio minimal / cairn {cpu_minimal / cpu_cairn:.2f}")


def runs_label(runs: int, concurrency: int) -> str:
    return (f"{runs} runs per side, started {concurrency} at a time "
            "(throughput: runs completed per second; latency under that load)")


async def main(runs: int, concurrency: int, warmup: int, idle_runs: int, sample: int,
               rounds: int, statements: bool = False, inline_routing: bool = False) -> None:
    configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp:
        folder = Path(tmp)
        server = DevServer(db_file=folder / "temporal.db", log_file=folder / "temporal.log",
                           port=free_port(), headless=True)
        client = await server.start(Settings(home=folder))
        store = await Store.open(f"sqlite+aiosqlite:///{folder / 'cairn.db'}",
                                 pool_size=STORE_POOL_SIZE)
        clock = SendClock()
        clock.install()
        counter = StoreCounter(store, by_text=statements)
        try:
            print(f"temporal dev server {server.address} (SQLite file), store {store.url}, "
                  f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
            cairn_side = CairnSide(client, store, inline_routing=inline_routing)
            print("cairn side entered "
                  + ("with each track call routed inside it (--inline-routing)" if inline_routing
                     else "as POST /v1/track enters it (stored, then routed with the other "
                          "calls' events)"))
            await cairn_side.publish(folder / "journeys")
            figures = await bench([MinimalSide(client, store), cairn_side], store, clock,
                                  counter, runs=runs, concurrency=concurrency, warmup=warmup,
                                  idle_runs=idle_runs, sample=min(runs, sample),
                                  rounds=max(1, min(rounds, runs)),
                                  server_pid=server.process.pid if server.process else None)
            report(figures["cairn"], figures["minimal"], concurrency, rounds)
            if statements:
                for name, texts in counter.texts.items():
                    print(f"\nSQL statements per run, {name}:")
                    for text, count in texts.most_common():
                        print(f"{count / runs:6.2f}  {text}")
        finally:
            await store.close()
            await server.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per side (default 200)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="runs being started at the same time (default 50)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="runs per side before measuring, in each round (default 10)")
    parser.add_argument("--idle-runs", type=int, default=10,
                        help="runs per side one at a time, for latency without load (default 10)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds the loaded runs are split into, the sides taking turns "
                             "(default 2)")
    parser.add_argument("--histories", type=int, default=50,
                        help="loaded runs per side whose histories are counted (default 50)")
    parser.add_argument("--statements", action="store_true",
                        help="also print each side's SQL statements per run, by text")
    parser.add_argument("--inline-routing", action="store_true",
                        help="route each track call on its own, inside the call, instead of "
                             "as POST /v1/track does (stored, then routed with other calls)")
    args = parser.parse_args()
    code = 0
    try:
        asyncio.run(main(args.runs, args.concurrency, args.warmup, args.idle_runs,
                         args.histories, args.rounds, args.statements, args.inline_routing))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    # Temporal's runtime can abort while the interpreter finalizes; leave with the real status.
    os._exit(code)


if __name__ == "__main__":
    # Run under the module's importable name: the sandbox then re-imports a cached module per
    # run instead of recompiling `__main__` from source each time. Its bytecode is written here
    # even under PYTHONDONTWRITEBYTECODE, as Cairn's worker does for the workflow modules
    # (`starter.worker.compile_workflow_code`), so neither side compiles per run.
    import py_compile

    py_compile.compile(__file__, quiet=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import engine_overhead

    engine_overhead.cli()
